"""Adagrad."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), torch.optim.Adagrad's update and defaults.

    .. math::
        \tilde\gamma = \frac{\gamma}{1 + (t-1)\eta};\quad s \leftarrow s + g^2;\quad
        \theta \leftarrow \theta - \tilde\gamma\,\frac{g}{\sqrt{s} + \epsilon}

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        lr_decay: :math:`\eta`.
        weight_decay: L2 coefficient, added to the gradient.
        initial_accumulator_value: the value :math:`s` starts at.
        eps: :math:`\epsilon`, outside the root.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Adagrad([w], lr=0.1).step([np.full(2, 3.0)])
        True
        >>> w.round(6)
        array([0.9, 0.9])
    """

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay,
                                  "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value,
                                  "eps": eps, "maximize": maximize}, nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "lr_decay": V.nonneg("lr_decay", group["lr_decay"]),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "initial_accumulator_value": V.nonneg("initial_accumulator_value",
                                                  group["initial_accumulator_value"]),
            "eps": V.nonneg("eps", group["eps"], "epsilon"),
            "maximize": V.flag("maximize", group["maximize"]),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("sum",)

    def _state_init(self, hp: Mapping[str, Any], name: str) -> float:
        return hp["initial_accumulator_value"]

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        step = ss["step"] + 1.0
        F._adagrad(g, p, state[0], gs=gs, step=step, lr=hp["lr"], lr_decay=hp["lr_decay"],
                   weight_decay=hp["weight_decay"], eps=hp["eps"])
        return {"step": step}
