"""RMSprop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, check_momentum_buffer, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["RMSprop", "rmsprop_"]


def _launch_rmsprop(g: Any, p: Any, sq: Any, ga: Any, buf: Any, *, gs: Any, lr: float,
                    alpha: float, eps: float, weight_decay: float, momentum: float,
                    average: Any = None) -> None:
    flags, avg_s, avg = averaging(
        (("centered", ga is not None), ("use_momentum", buf is not None)), average, p)
    # kernels/cpu/rmsprop.py: rmsprop(g, gs, wd, alpha, one_minus_alpha, eps, lr, momentum,
    # *avg_s | p, sq, ga, buf, avg); ga and buf are not touched by the variants without them
    _backend.launch("rmsprop", "rmsprop", flags, g, gs, weight_decay, alpha, 1.0 - alpha, eps, lr,
                    momentum, *avg_s, p, sq, p if ga is None else ga, p if buf is None else buf,
                    avg)


def rmsprop_(param: Any, grad: Any, square_avg: Any, grad_avg: Any = None,
             momentum_buffer: Any = None, *, lr: float = 1e-2, alpha: float = 0.99,
             eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
             maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One RMSprop step, in place (torch.optim.RMSprop's update).

    .. math::
        s \leftarrow \alpha s + (1-\alpha) g^2;\quad
        \bar g \leftarrow \bar g + (1-\alpha)(g - \bar g)\ \text{(centered)};\quad
        d = \sqrt{s - \bar g^2} + \epsilon \ \text{or}\ \sqrt{s} + \epsilon;\\
        b \leftarrow \mu b + g/d,\ \theta \leftarrow \theta - \gamma b
        \ \text{(momentum)};\ \text{else}\ \theta \leftarrow \theta - \gamma g/d

    Args:
        param: parameter, updated in place.
        grad: gradient.
        square_avg: :math:`s`.
        grad_avg: :math:`\bar g`; passing it selects the centered variant.
        momentum_buffer: :math:`b`; required iff ``momentum > 0``.
        lr: :math:`\gamma`.
        alpha: smoothing constant :math:`\alpha`.
        eps: :math:`\epsilon`, outside the root.
        weight_decay: L2 coefficient.
        momentum: :math:`\mu`.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, s = np.ones(1), np.ones(1), np.zeros(1)
        >>> rmsprop_(p, g, s, lr=0.01); p.round(3)
        array([0.9])
    """
    hp = RMSprop.check({"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                        "momentum": momentum, "centered": grad_avg is not None,
                        "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    check_momentum_buffer(hp["momentum"], momentum_buffer)
    g, p, sq, ga, buf = flat_arrays(param, grad, square_avg=square_avg, grad_avg=grad_avg,
                                    momentum_buffer=momentum_buffer)
    _launch_rmsprop(g, p, sq, ga, buf, gs=gs, lr=hp["lr"], alpha=hp["alpha"], eps=hp["eps"],
                    weight_decay=hp["weight_decay"], momentum=hp["momentum"])


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
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.RMSprop([w], lr=0.01).step([np.ones(2)])
        True
        >>> w.round(3)
        array([0.9, 0.9])
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "alpha": V.nonneg,
        "eps": V.epsilon,
        "weight_decay": V.nonneg,
        "momentum": V.nonneg,
        "centered": V.flag,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False,
                 nonfinite: str = "propagate", average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered, "maximize": maximize},
                         nonfinite=nonfinite, average=average,
                         **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return (("square_avg",) + (("grad_avg",) if hp["centered"] else ())
                + (("momentum_buffer",) if hp["momentum"] > 0 else ()))

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        it = iter(state[1:])
        ga = next(it) if hp["centered"] else None
        buf = next(it) if hp["momentum"] > 0 else None
        _launch_rmsprop(g, p, state[0], ga, buf, gs=gs, lr=hp["lr"], alpha=hp["alpha"],
                        eps=hp["eps"], weight_decay=hp["weight_decay"], momentum=hp["momentum"],
                        average=average)
        return {"step": ss["step"] + 1.0}
