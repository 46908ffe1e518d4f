"""Rprop: resilient backpropagation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Rprop", "rprop_"]


def _etas(name: str, value: Any) -> tuple[float, float]:
    """``(eta_minus, eta_plus)`` with 0 < eta_minus < 1 < eta_plus.

    torch's wording: "Invalid eta values".
    """
    try:
        lo, hi = (V.real(f"{name}[{i}]", v) for i, v in enumerate(tuple(value)))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from None
    if not 0.0 < lo < 1.0 < hi:
        raise ValueError(f"Invalid eta values: {lo}, {hi} ({name} must satisfy "
                         "0 < etas[0] < 1 < etas[1])")
    return lo, hi


def _step_sizes(name: str, value: Any) -> tuple[float, float]:
    """``(min, max)`` step sizes with 0 <= min <= max (max may be inf)."""
    try:
        lo, hi = (float(v) for v in tuple(value))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from None
    if math.isnan(lo) or math.isnan(hi) or not 0.0 <= lo <= hi:
        raise ValueError(f"Invalid step_sizes: {lo}, {hi} ({name} must satisfy "
                         "0 <= step_sizes[0] <= step_sizes[1])")
    return lo, hi


def _launch_rprop(g: Any, p: Any, prev: Any, step_size: Any, *, gs: Any, etas: Any,
                  step_sizes: Any, average: Any = None) -> None:
    # kernels/cpu/rprop.py: rprop(g, gs, etaminus, etaplus, step_min, step_max, *avg_s |
    # p, prev, step_size, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("rprop", "rprop", flags, g, gs, etas[0], etas[1], step_sizes[0],
                    step_sizes[1], *avg_s, p, prev, step_size, avg)


def rprop_(param: Any, grad: Any, prev: Any, step_size: Any, *,
           etas: tuple[float, float] = (0.5, 1.2),
           step_sizes: tuple[float, float] = (1e-6, 50.0), maximize: bool = False,
           grad_scale: float = 1.0) -> None:
    r"""One Rprop step, in place (torch.optim.Rprop's update).

    .. math::
        f = \begin{cases}\eta_+ & g\,g_{prev} > 0\\ \eta_- & g\,g_{prev} < 0\\
        1 & \text{else}\end{cases};\quad
        s \leftarrow \operatorname{clamp}(s f, s_{min}, s_{max});\quad
        g \leftarrow 0 \text{ where } f = \eta_-;\quad
        \theta \leftarrow \theta - \operatorname{sign}(g)\, s;\quad g_{prev} \leftarrow g

    Riedmiller & Braun, 1993.

    Args:
        param: parameter, updated in place.
        grad: gradient.
        prev: the previous step's gradient :math:`g_{prev}` (zeros before step 1).
        step_size: per-element step sizes :math:`s` (the learning rate before step 1).
        etas: :math:`(\eta_-, \eta_+)` with :math:`0 < \eta_- < 1 < \eta_+`.
        step_sizes: :math:`(s_{min}, s_{max})`.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g = np.ones(2), np.array([1.0, -1.0])
        >>> prev, s = np.zeros(2), np.full(2, 0.1)
        >>> rprop_(p, g, prev, s); p
        array([0.9, 1.1])
    """
    hp = Rprop.check({"lr": 0.0, "etas": etas, "step_sizes": step_sizes,
                      "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, pr, s = flat_arrays(param, grad, prev=prev, step_size=step_size)
    _launch_rprop(g, p, pr, s, gs=gs, etas=hp["etas"], step_sizes=hp["step_sizes"])


class Rprop(Optimizer):
    r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993), as torch.optim.Rprop.

    .. math::
        f = \begin{cases}\eta_+ & g\,g_{prev} > 0\\ \eta_- & g\,g_{prev} < 0\\
        1 & \text{else}\end{cases};\quad
        s \leftarrow \operatorname{clamp}(s f, s_{min}, s_{max});\quad
        g \leftarrow 0 \text{ where } f = \eta_-;\quad
        \theta \leftarrow \theta - \operatorname{sign}(g)\, s

    Every element keeps its own step size ``step_size``, which starts at the learning rate
    of the parameter's first step (``lr`` is not used after that, as in torch), and the
    previous gradient ``prev``.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: the initial step size.
        etas: :math:`(\eta_-, \eta_+)`.
        step_sizes: :math:`(s_{min}, s_{max})`.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> opt = fastgd.Rprop([w], lr=0.1)
        >>> opt.step([np.array([1.0, -2.0])])
        True
        >>> w
        array([0.9, 1.1])
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "etas": _etas,
        "step_sizes": _step_sizes,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), *, maximize: bool = False,
                 nonfinite: str = "propagate",
                 average: Averaging | None = None, **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "etas": etas, "step_sizes": step_sizes,
                                  "maximize": maximize}, nonfinite=nonfinite,
                         average=average, **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("prev", "step_size")

    def _state_init(self, hp: Mapping[str, Any], name: str) -> float:
        return hp["lr"] if name == "step_size" else 0.0

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        _launch_rprop(g, p, state[0], state[1], gs=gs, etas=hp["etas"],
                      step_sizes=hp["step_sizes"], average=average)
        return {"step": ss["step"] + 1.0}
