"""Stochastic gradient descent, with momentum and Nesterov momentum."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, check_momentum_buffer, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["SGD", "sgd_"]


def _launch_sgd(g: Any, p: Any, buf: Any, *, gs: Any, lr: float, momentum: float,
                dampening: float, weight_decay: float, nesterov: bool, first: bool,
                average: Any = None) -> None:
    if buf is None:
        # kernels/cpu/sgd.py: sgd(g, gs, wd, lr, *avg_s | p, avg)
        flags, avg_s, avg = averaging((), average, p)
        _backend.launch("sgd", "sgd", flags, g, gs, weight_decay, lr, *avg_s, p, avg)
    else:
        # torch clones the gradient into the buffer on the first step (no dampening): over
        # a zero buffer, damp = 1 gives exactly that
        damp = 1.0 if first else 1.0 - dampening
        # kernels/cpu/sgd.py: sgd_momentum(g, gs, wd, lr, momentum, damp, *avg_s | p, buf, avg)
        flags, avg_s, avg = averaging((("nesterov", nesterov),), average, p)
        _backend.launch("sgd", "sgd_momentum", flags, g, gs, weight_decay, lr, momentum, damp,
                        *avg_s, p, buf, avg)


def sgd_(param: Any, grad: Any, momentum_buffer: Any = None, *, lr: float,
         momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
         nesterov: bool = False, maximize: bool = False, step: int | None = None,
         grad_scale: float = 1.0) -> None:
    r"""One SGD step, in place (torch.optim.SGD's update).

    .. math::
        g \leftarrow g + \lambda\theta;\quad
        b \leftarrow \mu b + (1-\tau) g \ (b \leftarrow g \text{ at step 1});\quad
        \theta \leftarrow \theta - \gamma\,(g + \mu b \text{ if nesterov else } b)

    Args:
        param: parameter, updated in place.
        grad: gradient, same shape and dtype.
        momentum_buffer: the momentum state (zeros before step 1); required iff
            ``momentum > 0``.
        lr: learning rate :math:`\gamma`.
        momentum: :math:`\mu`.
        dampening: :math:`\tau`, not applied at step 1.
        weight_decay: L2 coefficient :math:`\lambda`.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: ascend instead of descend.
        step: 1-based number of this step; required with a momentum buffer.
        grad_scale: factor applied to the gradient first (e.g. a clipping scale).

    Example:
        >>> import numpy as np
        >>> p, g = np.ones(2), np.ones(2)
        >>> sgd_(p, g, lr=0.5); p
        array([0.5, 0.5])
    """
    hp = SGD.check({"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov,
                    "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    check_momentum_buffer(hp["momentum"], momentum_buffer)
    if momentum_buffer is not None:
        if step is None:
            raise ValueError("step is required with a momentum_buffer (step 1 copies the grad)")
        step = V.step(step)
    g, p, buf = flat_arrays(param, grad, momentum_buffer=momentum_buffer)
    _launch_sgd(g, p, buf, gs=gs, lr=hp["lr"], momentum=hp["momentum"], dampening=hp["dampening"],
                weight_decay=hp["weight_decay"], nesterov=hp["nesterov"], first=step == 1.0)


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
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(3, np.float32)
        >>> opt = fastgd.SGD([w], lr=0.1, momentum=0.9)
        >>> opt.step([np.ones(3, np.float32)])
        True
        >>> w
        array([0.9, 0.9, 0.9], dtype=float32)
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "momentum": V.nonneg,
        "dampening": V.real,
        "weight_decay": V.nonneg,
        "nesterov": V.flag,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False, nonfinite: str = "propagate",
                 average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov,
                                  "maximize": maximize}, nonfinite=nonfinite,
                         average=average, **torch_options)

    @classmethod
    def _check_together(cls, hp: Mapping[str, Any]) -> None:
        if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening "
                             f"(momentum={hp['momentum']!r}, dampening={hp['dampening']!r})")

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hp["momentum"] != 0 else ()

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        buf = state[0] if state else None
        _launch_sgd(g, p, buf, gs=gs, lr=hp["lr"], momentum=hp["momentum"],
                    dampening=hp["dampening"], weight_decay=hp["weight_decay"],
                    nesterov=hp["nesterov"], first=ss["step"] == 0, average=average)
        # The step count here counts momentum-buffer updates (torch keeps none): without
        # momentum SGD has no state at all.
        return {"step": ss["step"] + 1.0} if buf is not None else ss
