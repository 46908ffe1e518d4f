"""RAdam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, decay_terms, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["RAdam", "radam_"]


def _launch_radam(g: Any, p: Any, m: Any, v: Any, *, gs: Any, step: float, lr: float,
                  beta1: float, beta2: float, eps: float, weight_decay: float,
                  decoupled: bool, average: Any = None) -> None:
    l2, decay = decay_terms(lr, weight_decay, decoupled)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2**step) / bc2
    rect = 0.0  # 0: the un-adapted (SGD with momentum) branch
    if rho_t > 5.0:
        rect = (((rho_t - 4.0) * (rho_t - 2.0) * rho_inf)
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5
    # kernels/cpu/radam.py: radam(g, gs, l2, decay, one_minus_beta1, beta2, one_minus_beta2,
    # bc1, lr, rect, bc2_sqrt, eps, *avg_s | p, m, v, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("radam", "radam", flags, g, gs, l2, decay, 1.0 - beta1, beta2, 1.0 - beta2,
                    bc1, lr, rect, bc2**0.5, eps, *avg_s, p, m, v, avg)


def radam_(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, step: int,
           lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
           weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
           maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One RAdam step, in place (torch.optim.RAdam's update).

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1;\quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t};\quad
        \hat m = \frac{m}{1-\beta_1^t};\\
        \theta \leftarrow \theta - \gamma\hat m\, r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt v
        + \epsilon}\ \text{if}\ \rho_t > 5,\ \text{else}\ \theta - \gamma\hat m

    with :math:`r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)
    (\rho_\infty-2)\rho_t}}`. Liu et al., 2020.

    Args:
        param: parameter, updated in place.
        grad: gradient.
        exp_avg: :math:`m`.
        exp_avg_sq: :math:`v`.
        step: 1-based number of this step.
        lr: :math:`\gamma`.
        beta1: :math:`\beta_1`.
        beta2: :math:`\beta_2`.
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda`.
        decoupled_weight_decay: decay the parameter instead of adding L2 to the gradient.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, m, v = np.ones(1), np.ones(1), np.zeros(1), np.zeros(1)
        >>> radam_(p, g, m, v, step=1, lr=0.1); p.round(6)
        array([0.9])
    """
    step = V.step(step)
    hp = RAdam.check({"lr": lr, "betas": (beta1, beta2), "eps": eps,
                      "weight_decay": weight_decay,
                      "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize},
                     schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, m, v = flat_arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    (b1, b2) = hp["betas"]
    _launch_radam(g, p, m, v, gs=gs, step=step, lr=hp["lr"], beta1=b1, beta2=b2, eps=hp["eps"],
                  weight_decay=hp["weight_decay"], decoupled=hp["decoupled_weight_decay"])


class RAdam(Optimizer):
    r"""RAdam, Adam with variance rectification (Liu et al., 2020), as torch.optim.RAdam.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1;\quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t};\quad
        \hat m = \frac{m}{1-\beta_1^t};\\
        \theta \leftarrow \theta - \gamma\hat m\, r_t\frac{\sqrt{1-\beta_2^t}}{\sqrt v
        + \epsilon}\ \text{if}\ \rho_t > 5,\ \text{else}\ \theta - \gamma\hat m

    With the default :math:`\beta_2 = 0.999` the rectified branch starts at step 6.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda`.
        decoupled_weight_decay: decay the parameter (RAdamW) instead of L2.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.RAdam([w], lr=0.1).step([np.ones(2)])
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
        "decoupled_weight_decay": V.flag,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False,
                 nonfinite: str = "propagate", average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, nonfinite=nonfinite, average=average,
                         **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        _launch_radam(g, p, state[0], state[1], gs=gs, step=step, lr=hp["lr"], beta1=beta1,
                      beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"],
                      decoupled=hp["decoupled_weight_decay"], average=average)
        return {"step": step}
