"""Adamax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Adamax", "adamax_"]


def _launch_adamax(g: Any, p: Any, m: Any, u: Any, *, gs: Any, step: float, lr: float,
                   beta1: float, beta2: float, eps: float, weight_decay: float,
                   average: Any = None) -> None:
    clr = lr / (1.0 - beta1**step)
    # kernels/cpu/adamax.py: adamax(g, gs, wd, one_minus_beta1, beta2, eps, clr, *avg_s |
    # p, m, u, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("adamax", "adamax", flags, g, gs, weight_decay, 1.0 - beta1, beta2, eps, clr,
                    *avg_s, p, m, u, avg)


def adamax_(param: Any, grad: Any, exp_avg: Any, exp_inf: Any, *, step: int,
            lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
            weight_decay: float = 0.0, maximize: bool = False,
            grad_scale: float = 1.0) -> None:
    r"""One Adamax step, in place (torch.optim.Adamax's update).

    .. math::
        m \leftarrow m + (1-\beta_1)(g-m);\quad u \leftarrow \max(\beta_2 u, |g| + \epsilon);
        \quad \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\frac{m}{u}

    Args:
        param: parameter, updated in place.
        grad: gradient.
        exp_avg: :math:`m`.
        exp_inf: :math:`u`, the exponentially weighted infinity norm.
        step: 1-based number of this step.
        lr: :math:`\gamma`.
        beta1: :math:`\beta_1`.
        beta2: :math:`\beta_2`.
        eps: :math:`\epsilon`.
        weight_decay: L2 coefficient.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, m, u = np.ones(1), np.ones(1), np.zeros(1), np.zeros(1)
        >>> adamax_(p, g, m, u, step=1, lr=0.1); p.round(6)
        array([0.9])
    """
    step = V.step(step)
    hp = Adamax.check({"lr": lr, "betas": (beta1, beta2), "eps": eps,
                       "weight_decay": weight_decay, "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, m, u = flat_arrays(param, grad, exp_avg=exp_avg, exp_inf=exp_inf)
    (b1, b2) = hp["betas"]
    _launch_adamax(g, p, m, u, gs=gs, step=step, lr=hp["lr"], beta1=b1, beta2=b2, eps=hp["eps"],
                   weight_decay=hp["weight_decay"])


class Adamax(Optimizer):
    r"""Adamax, Adam with the infinity norm (Kingma & Ba, 2015), as torch.optim.Adamax.

    .. math::
        m \leftarrow m + (1-\beta_1)(g-m);\quad u \leftarrow \max(\beta_2 u, |g| + \epsilon);
        \quad \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\frac{m}{u}

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
        weight_decay: L2 coefficient.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Adamax([w], lr=0.1).step([np.ones(2)])
        True
        >>> w.round(6)
        array([0.9, 0.9])
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "betas": V.betas,
        "eps": V.epsilon,
        "weight_decay": V.nonneg,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate", average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         nonfinite=nonfinite, average=average,
                         **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        _launch_adamax(g, p, state[0], state[1], gs=gs, step=step, lr=hp["lr"], beta1=beta1,
                       beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"], average=average)
        return {"step": step}
