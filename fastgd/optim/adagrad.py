"""Adagrad."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Adagrad", "adagrad_"]


def _launch_adagrad(g: Any, p: Any, s: Any, *, gs: Any, step: float, lr: float,
                    lr_decay: float, weight_decay: float, eps: float, average: Any = None) -> None:
    clr = lr / (1.0 + (step - 1.0) * lr_decay)
    # kernels/cpu/adagrad.py: adagrad(g, gs, wd, clr, eps, *avg_s | p, s, avg)
    flags, avg_s, avg = averaging((), average, p)
    _backend.launch("adagrad", "adagrad", flags, g, gs, weight_decay, clr, eps, *avg_s, p, s, avg)


def adagrad_(param: Any, grad: Any, state_sum: Any, *, step: int, lr: float = 1e-2,
             lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
             maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One Adagrad step, in place (torch.optim.Adagrad's update).

    .. math::
        \tilde\gamma = \frac{\gamma}{1 + (t-1)\eta};\quad s \leftarrow s + g^2;\quad
        \theta \leftarrow \theta - \tilde\gamma\,\frac{g}{\sqrt{s} + \epsilon}

    Args:
        param: parameter, updated in place.
        grad: gradient.
        state_sum: accumulated squares (start it at ``initial_accumulator_value``).
        step: 1-based number of this step :math:`t`.
        lr: :math:`\gamma`.
        lr_decay: :math:`\eta`.
        weight_decay: L2 coefficient, added to the gradient.
        eps: :math:`\epsilon`, outside the root.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, s = np.ones(1), np.full(1, 2.0), np.zeros(1)
        >>> adagrad_(p, g, s, step=1, lr=0.1); p
        array([0.9])
    """
    step = V.step(step)
    hp = Adagrad.check({"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                        "initial_accumulator_value": 0.0, "eps": eps, "maximize": maximize},
                       schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, s = flat_arrays(param, grad, state_sum=state_sum)
    _launch_adagrad(g, p, s, gs=gs, step=step, lr=hp["lr"], lr_decay=hp["lr_decay"],
                    weight_decay=hp["weight_decay"], eps=hp["eps"])


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011), torch.optim.Adagrad's update and defaults.

    .. math::
        \tilde\gamma = \frac{\gamma}{1 + (t-1)\eta};\quad s \leftarrow s + g^2;\quad
        \theta \leftarrow \theta - \tilde\gamma\,\frac{g}{\sqrt{s} + \epsilon}

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        lr_decay: :math:`\eta`.
        weight_decay: L2 coefficient, added to the gradient.
        initial_accumulator_value: the value :math:`s` starts at.
        eps: :math:`\epsilon`, outside the root.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.Adagrad([w], lr=0.1).step([np.full(2, 3.0)])
        True
        >>> w.round(6)
        array([0.9, 0.9])
    """

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "lr_decay": V.nonneg,
        "weight_decay": V.nonneg,
        "initial_accumulator_value": V.nonneg,
        "eps": V.epsilon,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False,
                 nonfinite: str = "propagate",
                 average: Averaging | None = None, **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay,
                                  "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value,
                                  "eps": eps, "maximize": maximize}, nonfinite=nonfinite,
                         average=average,
                         **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("sum",)

    def _state_init(self, hp: Mapping[str, Any], name: str) -> float:
        return hp["initial_accumulator_value"]

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        step = ss["step"] + 1.0
        _launch_adagrad(g, p, state[0], gs=gs, step=step, lr=hp["lr"], lr_decay=hp["lr_decay"],
                        weight_decay=hp["weight_decay"], eps=hp["eps"], average=average)
        return {"step": step}
