"""ASGD: averaged stochastic gradient descent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["ASGD", "asgd_"]


def _launch_asgd(g: Any, p: Any, ax: Any, *, gs: Any, step: float, eta: float, mu: float,
                 lr: float, lambd: float, alpha: float, t0: float,
                 weight_decay: float, average: Any = None) -> tuple[float, float]:
    # kernels/cpu/asgd.py: asgd(g, gs, wd, decay, eta, mu, *avg_s | p, ax, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("asgd", "asgd", flags, g, gs, weight_decay, 1.0 - lambd * eta, eta, mu,
                    *avg_s, p, ax, avg)
    # the next step's eta and mu, from this step's count (torch updates them after the step)
    return lr / ((1.0 + lambd * lr * step) ** alpha), 1.0 / max(1.0, step - t0)


def asgd_(param: Any, grad: Any, ax: Any, *, step: int, eta: float | None = None,
          mu: float = 1.0, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
          t0: float = 1e6, weight_decay: float = 0.0, maximize: bool = False,
          grad_scale: float = 1.0) -> tuple[float, float]:
    r"""One ASGD step, in place (torch.optim.ASGD's update); returns the next ``(eta, mu)``.

    .. math::
        \theta \leftarrow \theta(1 - \lambda\eta_t) - \eta_t (g + \lambda_w\theta);\quad
        \bar\theta \leftarrow \bar\theta + \mu_t(\theta - \bar\theta);\\
        \eta_{t+1} = \frac{\gamma}{(1 + \lambda\gamma t)^\alpha};\quad
        \mu_{t+1} = \frac{1}{\max(1, t - t_0)}

    Polyak & Juditsky, 1992; the averaged parameter :math:`\bar\theta` copies
    :math:`\theta` while :math:`\mu = 1`.

    Args:
        param: parameter, updated in place.
        grad: gradient.
        ax: the averaged parameter :math:`\bar\theta` (zeros before step 1).
        step: 1-based number of this step :math:`t`.
        eta: :math:`\eta_t`: what the previous call returned (None at step 1: ``lr``).
        mu: :math:`\mu_t`: what the previous call returned (1.0 at step 1).
        lr: :math:`\gamma`.
        lambd: decay term :math:`\lambda`.
        alpha: power :math:`\alpha` of the eta schedule.
        t0: the step from which averaging starts.
        weight_decay: L2 coefficient :math:`\lambda_w`.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Returns:
        ``(eta, mu)`` for the next step.

    Example:
        >>> import numpy as np
        >>> p, g, ax = np.ones(2), np.ones(2), np.zeros(2)
        >>> eta, mu = asgd_(p, g, ax, step=1, lr=0.1, lambd=0.0)
        >>> p, ax
        (array([0.9, 0.9]), array([0.9, 0.9]))
    """
    step = V.step(step)
    hp = ASGD.check({"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0,
                     "weight_decay": weight_decay, "maximize": maximize}, schedules=False)
    eta = hp["lr"] if eta is None else V.nonneg("eta", eta)
    mu = V.nonneg("mu", mu)
    gs = scale_of(maximize, grad_scale)
    g, p, a = flat_arrays(param, grad, ax=ax)
    return _launch_asgd(g, p, a, gs=gs, step=step, eta=eta, mu=mu, lr=hp["lr"],
                        lambd=hp["lambd"], alpha=hp["alpha"], t0=hp["t0"],
                        weight_decay=hp["weight_decay"])


class ASGD(Optimizer):
    r"""ASGD, averaged SGD (Polyak & Juditsky, 1992), torch.optim.ASGD's update and defaults.

    .. math::
        \theta \leftarrow \theta(1 - \lambda\eta_t) - \eta_t (g + \lambda_w\theta);\quad
        \bar\theta \leftarrow \bar\theta + \mu_t(\theta - \bar\theta);\\
        \eta_{t+1} = \frac{\gamma}{(1 + \lambda\gamma t)^\alpha};\quad
        \mu_{t+1} = \frac{1}{\max(1, t - t_0)}

    :math:`\eta` starts at the learning rate of the parameter's first step and :math:`\mu`
    at 1 (while it is 1 the average copies the parameter); both are per-parameter scalar
    state (``eta``, ``mu``, as torch keeps them), the average is the state array ``ax``.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        lambd: decay term :math:`\lambda`.
        alpha: power of the eta schedule.
        t0: the step from which averaging starts.
        weight_decay: L2 coefficient :math:`\lambda_w`.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> opt = fastgd.ASGD([w], lr=0.1, lambd=0.0)
        >>> opt.step([np.ones(2)])
        True
        >>> w, opt.state[0]["ax"]
        (array([0.9, 0.9]), array([0.9, 0.9]))
    """

    _scalar_init: ClassVar[Scalars] = {"step": 0.0, "eta": 0.0, "mu": 1.0}

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "lambd": V.nonneg,
        "alpha": V.real,
        "t0": V.real,
        "weight_decay": V.nonneg,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         nonfinite=nonfinite, average=average, **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("ax",)

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        step = ss["step"] + 1.0
        eta = hp["lr"] if ss["step"] == 0 else ss["eta"]  # torch: eta starts at lr
        eta_next, mu_next = _launch_asgd(g, p, state[0], gs=gs, step=step, eta=eta,
                                         mu=ss["mu"], lr=hp["lr"], lambd=hp["lambd"],
                                         alpha=hp["alpha"], t0=hp["t0"],
                                         weight_decay=hp["weight_decay"], average=average)
        return {"step": step, "eta": eta_next, "mu": mu_next}
