"""Lion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Lion", "lion_"]


def _launch_lion(g: Any, p: Any, m: Any, *, gs: Any, lr: float, beta1: float, beta2: float,
                 weight_decay: float, average: Any = None) -> None:
    # kernels/cpu/lion.py: lion(g, gs, wd, beta1, one_minus_beta1, beta2, one_minus_beta2, lr,
    # *avg_s | p, m, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("lion", "lion", flags, g, gs, weight_decay, beta1, 1.0 - beta1, beta2,
                    1.0 - beta2, lr, *avg_s, p, m, avg)


def lion_(param: Any, grad: Any, exp_avg: Any, *, lr: float = 1e-4, beta1: float = 0.9,
          beta2: float = 0.99, weight_decay: float = 0.0, maximize: bool = False,
          grad_scale: float = 1.0) -> None:
    r"""One Lion step, in place (Chen et al., 2023; optax.lion's update).

    .. math::
        c = \beta_1 m + (1-\beta_1) g;\quad
        \theta \leftarrow \theta - \gamma(\operatorname{sign}(c) + \lambda\theta);\quad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Args:
        param: parameter, updated in place.
        grad: gradient.
        exp_avg: :math:`m`.
        lr: :math:`\gamma` (use 3-10x less than for AdamW).
        beta1: interpolation coefficient of the update, :math:`\beta_1`.
        beta2: momentum coefficient, :math:`\beta_2`.
        weight_decay: decoupled decay :math:`\lambda` (3-10x more than for AdamW).
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, m = np.ones(2), np.array([3.0, -0.5]), np.zeros(2)
        >>> lion_(p, g, m, lr=0.1); p
        array([0.9, 1.1])
    """
    hp = Lion.check({"lr": lr, "betas": (beta1, beta2), "weight_decay": weight_decay,
                     "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, m = flat_arrays(param, grad, exp_avg=exp_avg)
    (b1, b2) = hp["betas"]
    _launch_lion(g, p, m, gs=gs, lr=hp["lr"], beta1=b1, beta2=b2, weight_decay=hp["weight_decay"])


class Lion(Optimizer):
    r"""Lion, evolved sign momentum (Chen et al., 2023), as optax.lion computes it.

    .. math::
        c = \beta_1 m + (1-\beta_1) g;\quad
        \theta \leftarrow \theta - \gamma(\operatorname{sign}(c) + \lambda\theta);\quad
        m \leftarrow \beta_2 m + (1-\beta_2) g

    Not in torch.optim. Defaults follow the paper and the common PyTorch ports
    (lr 1e-4, betas (0.9, 0.99), no weight decay; optax's default decay is 1e-3). Use a
    learning rate 3-10x smaller and a weight decay 3-10x larger than for AdamW.
    ``sign(0) = 0``.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`.
        weight_decay: decoupled decay :math:`\lambda`.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Lion([w], lr=0.1).step([np.array([2.0, -3.0])])
        True
        >>> w
        array([0.9, 1.1])
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "betas": V.betas,
        "weight_decay": V.nonneg,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False,
                 nonfinite: str = "propagate", average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                                  "maximize": maximize}, nonfinite=nonfinite, average=average,
                         **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg",)

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        beta1, beta2 = hp["betas"]
        _launch_lion(g, p, state[0], gs=gs, lr=hp["lr"], beta1=beta1, beta2=beta2,
                     weight_decay=hp["weight_decay"], average=average)
        return {"step": ss["step"] + 1.0}
