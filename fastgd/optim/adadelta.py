"""Adadelta."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), torch.optim.Adadelta's update and defaults.

    .. math::
        u \leftarrow \rho u + (1-\rho) g^2;\quad
        \Delta = \frac{\sqrt{a + \epsilon}}{\sqrt{u + \epsilon}}\, g;\quad
        a \leftarrow \rho a + (1-\rho)\Delta^2;\quad \theta \leftarrow \theta - \gamma\Delta

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma` (1.0 is the paper's rule, which has no learning rate).
        rho: :math:`\rho` in [0, 1].
        eps: :math:`\epsilon`, inside both roots.
        weight_decay: L2 coefficient.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Adadelta([w]).step([np.ones(2)])
        True
        >>> bool((w < 1).all())
        True
    """

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "rho": V.closed_unit("rho", group["rho"]),
            "eps": V.nonneg("eps", group["eps"], "epsilon"),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "maximize": V.flag("maximize", group["maximize"]),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        F._adadelta(g, p, state[0], state[1], gs=gs, lr=hp["lr"], rho=hp["rho"],
                    eps=hp["eps"], weight_decay=hp["weight_decay"])
        return {"step": ss["step"] + 1.0}
