"""NAdam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, decay_terms, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["NAdam", "nadam_"]


def _launch_nadam(g: Any, p: Any, m: Any, v: Any, *, gs: Any, step: float,
                  mu_product: float, lr: float, beta1: float, beta2: float, eps: float,
                  weight_decay: float, momentum_decay: float, decoupled: bool,
                  average: Any = None) -> float:
    l2, decay = decay_terms(lr, weight_decay, decoupled)
    bc2 = 1.0 - beta2**step
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1.0) * momentum_decay)))
    mu_product = mu_product * mu
    c_grad = lr * (1.0 - mu) / (1.0 - mu_product)
    c_avg = lr * mu_next / (1.0 - mu_product * mu_next)
    # kernels/cpu/nadam.py: nadam(g, gs, l2, decay, one_minus_beta1, beta2, one_minus_beta2,
    # bc2, eps, c_grad, c_avg, *avg_s | p, m, v, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("nadam", "nadam", flags, g, gs, l2, decay, 1.0 - beta1, beta2, 1.0 - beta2,
                    bc2, eps, c_grad, c_avg, *avg_s, p, m, v, avg)
    return mu_product


def nadam_(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, step: int,
           mu_product: float = 1.0, lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999,
           eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
           decoupled_weight_decay: bool = False, maximize: bool = False,
           grad_scale: float = 1.0) -> float:
    r"""One NAdam step, in place (torch.optim.NAdam's update); returns the new ``mu_product``.

    .. math::
        \mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi});\quad \Pi \leftarrow \Pi\mu_t;\quad
        d = \sqrt{v / (1-\beta_2^t)} + \epsilon;\\
        \theta \leftarrow \theta - \frac{\gamma(1-\mu_t)}{1-\Pi}\frac{g}{d}
        - \frac{\gamma\mu_{t+1}}{1-\Pi\mu_{t+1}}\frac{m}{d}

    Dozat, 2016.

    Args:
        param: parameter, updated in place.
        grad: gradient.
        exp_avg: :math:`m`.
        exp_avg_sq: :math:`v`.
        step: 1-based number of this step.
        mu_product: :math:`\Pi` before this step (1.0 before step 1).
        lr: :math:`\gamma`.
        beta1: :math:`\beta_1`.
        beta2: :math:`\beta_2`.
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda`.
        momentum_decay: :math:`\psi`.
        decoupled_weight_decay: decay the parameter instead of adding L2 to the gradient.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Returns:
        :math:`\Pi` after this step, to pass to the next call.

    Example:
        >>> import numpy as np
        >>> p, g, m, v = np.ones(1), np.ones(1), np.zeros(1), np.zeros(1)
        >>> mu = nadam_(p, g, m, v, step=1, mu_product=1.0); bool(p[0] < 1)
        True
    """
    step = V.step(step)
    mu_product = V.real("mu_product", mu_product)
    hp = NAdam.check({"lr": lr, "betas": (beta1, beta2), "eps": eps,
                      "weight_decay": weight_decay, "momentum_decay": momentum_decay,
                      "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize},
                     schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, m, v = flat_arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    (b1, b2) = hp["betas"]
    return _launch_nadam(g, p, m, v, gs=gs, step=step, mu_product=mu_product, lr=hp["lr"],
                         beta1=b1, beta2=b2, eps=hp["eps"], weight_decay=hp["weight_decay"],
                         momentum_decay=hp["momentum_decay"],
                         decoupled=hp["decoupled_weight_decay"])


class NAdam(Optimizer):
    r"""NAdam, Adam with Nesterov momentum (Dozat, 2016), as torch.optim.NAdam.

    .. math::
        \mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi});\quad \Pi \leftarrow \Pi\mu_t;\quad
        d = \sqrt{v / (1-\beta_2^t)} + \epsilon;\\
        \theta \leftarrow \theta - \frac{\gamma(1-\mu_t)}{1-\Pi}\frac{g}{d}
        - \frac{\gamma\mu_{t+1}}{1-\Pi\mu_{t+1}}\frac{m}{d}

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda`.
        momentum_decay: :math:`\psi`.
        decoupled_weight_decay: decay the parameter (NAdamW) instead of L2.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.NAdam([w]).step([np.ones(2)])
        True
        >>> bool((w < 1).all())
        True
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "betas": V.betas,
        "eps": V.epsilon,
        "weight_decay": V.nonneg,
        "momentum_decay": V.nonneg,
        "decoupled_weight_decay": V.flag,
        "maximize": V.flag,
    }

    _scalar_init: ClassVar[Scalars] = {"step": 0.0, "mu_product": 1.0}

    def __init__(self, params: Any, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 nonfinite: str = "propagate", average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "momentum_decay": momentum_decay,
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
        mu_product = _launch_nadam(g, p, state[0], state[1], gs=gs, step=step,
                                   mu_product=ss["mu_product"], lr=hp["lr"], beta1=beta1,
                                   beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"],
                                   momentum_decay=hp["momentum_decay"],
                                   decoupled=hp["decoupled_weight_decay"], average=average)
        return {"step": step, "mu_product": mu_product}
