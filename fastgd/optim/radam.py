"""RAdam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


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

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.RAdam([w], lr=0.1).step([np.ones(2)])
        True
        >>> w.round(6)
        array([0.9, 0.9])
    """

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "betas": V.betas(group["betas"]),
            "eps": V.nonneg("eps", group["eps"], "epsilon"),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "decoupled_weight_decay": V.flag("decoupled_weight_decay",
                                             group["decoupled_weight_decay"]),
            "maximize": V.flag("maximize", group["maximize"]),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        F._radam(g, p, state[0], state[1], gs=gs, step=step, lr=hp["lr"], beta1=beta1,
                 beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"],
                 decoupled=hp["decoupled_weight_decay"])
        return {"step": step}
