"""NAdam."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


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

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.NAdam([w]).step([np.ones(2)])
        True
        >>> bool((w < 1).all())
        True
    """

    _scalar_init: ClassVar[Scalars] = {"step": 0.0, "mu_product": 1.0}

    def __init__(self, params: Any, lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay,
                                  "momentum_decay": momentum_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, nonfinite=nonfinite)

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "betas": V.betas(group["betas"]),
            "eps": V.nonneg("eps", group["eps"], "epsilon"),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "momentum_decay": V.nonneg("momentum_decay", group["momentum_decay"]),
            "decoupled_weight_decay": V.flag("decoupled_weight_decay",
                                             group["decoupled_weight_decay"]),
            "maximize": V.flag("maximize", group["maximize"]),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        mu_product = F._nadam(g, p, state[0], state[1], gs=gs, step=step,
                              mu_product=ss["mu_product"], lr=hp["lr"], beta1=beta1,
                              beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"],
                              momentum_decay=hp["momentum_decay"],
                              decoupled=hp["decoupled_weight_decay"])
        return {"step": step, "mu_product": mu_product}
