"""RMSprop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, 2012), torch.optim.RMSprop's update and defaults.

    .. math::
        s \leftarrow \alpha s + (1-\alpha) g^2;\quad
        \bar g \leftarrow \bar g + (1-\alpha)(g - \bar g)\ \text{(centered)};\quad
        d = \sqrt{s - \bar g^2} + \epsilon\ \text{or}\ \sqrt{s} + \epsilon;\\
        b \leftarrow \mu b + g/d,\ \theta \leftarrow \theta - \gamma b\ (\mu > 0);
        \ \text{else}\ \theta \leftarrow \theta - \gamma g/d

    :math:`\epsilon` is outside the root (torch's convention; TensorFlow puts it inside).
    Buffers start at zero.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        alpha: smoothing constant :math:`\alpha`.
        eps: :math:`\epsilon`.
        weight_decay: L2 coefficient.
        momentum: :math:`\mu`.
        centered: normalize by the estimated variance of the gradient.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.RMSprop([w], lr=0.01).step([np.ones(2)])
        True
        >>> w.round(3)
        array([0.9, 0.9])
    """

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered, "maximize": maximize}, nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "alpha": V.nonneg("alpha", group["alpha"]),
            "eps": V.nonneg("eps", group["eps"], "epsilon"),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "momentum": V.nonneg("momentum", group["momentum"]),
            "centered": V.flag("centered", group["centered"]),
            "maximize": V.flag("maximize", group["maximize"]),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return (("square_avg",) + (("grad_avg",) if hp["centered"] else ())
                + (("momentum_buffer",) if hp["momentum"] > 0 else ()))

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        it = iter(state[1:])
        ga = next(it) if hp["centered"] else None
        buf = next(it) if hp["momentum"] > 0 else None
        F._rmsprop(g, p, state[0], ga, buf, gs=gs, lr=hp["lr"], alpha=hp["alpha"],
                   eps=hp["eps"], weight_decay=hp["weight_decay"], momentum=hp["momentum"])
        return {"step": ss["step"] + 1.0}
