"""Adadelta."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Adadelta", "adadelta_"]


def _launch_adadelta(g: Any, p: Any, u: Any, a: Any, *, gs: Any, lr: float, rho: float,
                     eps: float, weight_decay: float, average: Any = None) -> None:
    # kernels/cpu/adadelta.py: adadelta(g, gs, wd, rho, one_minus_rho, eps, lr, *avg_s |
    # p, u, a, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("adadelta", "adadelta", flags, g, gs, weight_decay, rho, 1.0 - rho, eps, lr,
                    *avg_s, p, u, a, avg)


def adadelta_(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *, lr: float = 1.0,
              rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
              maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One Adadelta step, in place (torch.optim.Adadelta's update).

    .. math::
        u \leftarrow \rho u + (1-\rho) g^2;\quad
        \Delta = \frac{\sqrt{a + \epsilon}}{\sqrt{u + \epsilon}}\, g;\quad
        a \leftarrow \rho a + (1-\rho)\Delta^2;\quad \theta \leftarrow \theta - \gamma\Delta

    Args:
        param: parameter, updated in place.
        grad: gradient.
        square_avg: :math:`u`.
        acc_delta: :math:`a`.
        lr: :math:`\gamma` (1.0 is the paper's rule).
        rho: :math:`\rho` in [0, 1].
        eps: :math:`\epsilon`, inside both roots.
        weight_decay: L2 coefficient.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, u, a = np.ones(1), np.ones(1), np.zeros(1), np.zeros(1)
        >>> adadelta_(p, g, u, a, eps=1e-6); bool(p[0] < 1)
        True
    """
    hp = Adadelta.check({"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay,
                         "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, u, a = flat_arrays(param, grad, square_avg=square_avg, acc_delta=acc_delta)
    _launch_adadelta(g, p, u, a, gs=gs, lr=hp["lr"], rho=hp["rho"], eps=hp["eps"],
                     weight_decay=hp["weight_decay"])


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
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Adadelta([w]).step([np.ones(2)])
        True
        >>> bool((w < 1).all())
        True
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "rho": V.closed_unit,
        "eps": V.epsilon,
        "weight_decay": V.nonneg,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate",
                 average: Averaging | None = None, **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         nonfinite=nonfinite, average=average, **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        _launch_adadelta(g, p, state[0], state[1], gs=gs, lr=hp["lr"], rho=hp["rho"], eps=hp["eps"],
                         weight_decay=hp["weight_decay"], average=average)
        return {"step": ss["step"] + 1.0}
