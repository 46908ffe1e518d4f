"""Stochastic gradient descent, with momentum and Nesterov momentum."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


class SGD(Optimizer):
    r"""SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    torch.optim.SGD's update, with its defaults:

    .. math::
        g \leftarrow \pm g + \lambda\theta;\quad
        b \leftarrow \mu b + (1-\tau) g\ (b \leftarrow g \text{ on the first step});\quad
        \theta \leftarrow \theta - \gamma\,(g + \mu b \text{ if nesterov else } b)

    Plain (batch, stochastic or mini-batch) gradient descent is ``momentum=0``; Nesterov
    accelerated gradient is ``nesterov=True`` (Sutskever et al., 2013, in torch's form,
    where the learning rate sits outside the buffer).

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: learning rate :math:`\gamma`.
        momentum: :math:`\mu`.
        dampening: :math:`\tau`.
        weight_decay: L2 coefficient :math:`\lambda`.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(3, np.float32)
        >>> opt = fastgd.SGD([w], lr=0.1, momentum=0.9)
        >>> opt.step([np.ones(3, np.float32)])
        True
        >>> w
        array([0.9, 0.9, 0.9], dtype=float32)
    """

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov,
                                  "maximize": maximize}, nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        hp = {
            "lr": V.lr_or_schedule(group["lr"]),
            "momentum": V.nonneg("momentum", group["momentum"]),
            "dampening": V.real("dampening", group["dampening"]),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "nesterov": V.flag("nesterov", group["nesterov"]),
            "maximize": V.flag("maximize", group["maximize"]),
        }
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening "
                             f"(momentum={group['momentum']!r}, "
                             f"dampening={group['dampening']!r})")
        return hp

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        buf = state[0] if state else None
        F._sgd(g, p, buf, gs=gs, lr=hp["lr"], momentum=hp["momentum"],
               dampening=hp["dampening"], weight_decay=hp["weight_decay"],
               nesterov=hp["nesterov"], first=ss["step"] == 0)
        # The step count here counts momentum-buffer updates (torch keeps none): without
        # momentum SGD has no state at all.
        return {"step": ss["step"] + 1.0} if buf is not None else ss
