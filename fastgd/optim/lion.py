"""Lion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


class Lion(Optimizer):
    r"""Lion, evolved sign momentum (Chen et al., 2023), as optax.lion computes it.

    .. math::
        c = \beta_1 m + (1-\beta_1) g;\quad
        \theta \leftarrow \theta - \gamma(\operatorname{sign}(c) + \lambda\theta);\quad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Not in torch.optim. Defaults follow the paper and the common PyTorch ports
    (lr 1e-4, betas (0.9, 0.99), no weight decay; optax's default decay is 1e-3). Use a
    learning rate 3-10x smaller and a weight decay 3-10x larger than for AdamW.
    ``sign(0) = 0``.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`.
        weight_decay: decoupled decay :math:`\lambda`.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Lion([w], lr=0.1).step([np.array([2.0, -3.0])])
        True
        >>> w
        array([0.9, 1.1])
    """

    def __init__(self, params: Any, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                                  "maximize": maximize}, nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "betas": V.betas(group["betas"]),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "maximize": V.flag("maximize", group["maximize"]),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg",)

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        beta1, beta2 = hp["betas"]
        F._lion(g, p, state[0], gs=gs, lr=hp["lr"], beta1=beta1, beta2=beta2,
                weight_decay=hp["weight_decay"])
        return {"step": ss["step"] + 1.0}
