"""Adam and AdamW (optionally AMSGrad)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _validate as V
from fastgd import functional as F
from fastgd.optim.base import Optimizer, Scalars


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), torch.optim.Adam's update and defaults.

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m);\quad v \leftarrow \beta_2 v + (1-\beta_2)g^2;\\
        \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\,
        \frac{m}{\sqrt{\hat v/(1-\beta_2^t) + \epsilon_r} + \epsilon}

    :math:`\hat v` is :math:`v`, or its running maximum with ``amsgrad``. Weight decay is
    L2 (:math:`g \leftarrow g + \lambda\theta`) unless ``decoupled_weight_decay``, which
    makes this :class:`AdamW` (:math:`\theta \leftarrow \theta(1-\gamma\lambda)` first).
    :math:`\epsilon` is added after bias-correcting :math:`\sqrt v`, as torch and optax
    do; :math:`\epsilon_r` (``eps_root``, optax's name) is 0 unless given, and then the
    update is torch's bit for bit. Recipes from TensorFlow / Keras add :math:`\epsilon` to
    :math:`\sqrt{\hat v}` *before* the bias correction (the paper's :math:`\hat\epsilon`):
    ``eps_mode="hat"`` reproduces them, the denominator being
    :math:`(\sqrt{\hat v + \epsilon_r(1-\beta_2^t)} + \epsilon)/\sqrt{1-\beta_2^t}`.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda`.
        amsgrad: use the running maximum of :math:`v` (Reddi et al., 2018).
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        decoupled_weight_decay: AdamW's decay instead of L2.
        eps_root: :math:`\epsilon_r` >= 0, inside the square root.
        eps_mode: ``"torch"`` (default) or ``"hat"``, where :math:`\epsilon` goes.

    Example:
        >>> import numpy as np, fastgd
        >>> params = [np.ones((2, 2), np.float32), np.zeros(2, np.float32)]
        >>> opt = fastgd.Adam(params, lr=0.1)
        >>> opt.step([np.ones((2, 2), np.float32), None])   # None: no gradient this step
        True
        >>> params[0].round(4)
        array([[0.9, 0.9],
               [0.9, 0.9]], dtype=float32)
    """

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, eps_root: float = 0.0,
                 eps_mode: str = "torch", nonfinite: str = "propagate") -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad,
                                  "maximize": maximize,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "eps_root": eps_root, "eps_mode": eps_mode},
                         nonfinite=nonfinite)

    _added_hyperparameters: ClassVar[dict[str, Any]] = {"eps_root": 0.0, "eps_mode": "torch"}

    def _normalize(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "lr": V.lr_or_schedule(group["lr"]),
            "betas": V.betas(group["betas"]),
            "eps": V.nonneg("eps", group["eps"], "epsilon"),
            "weight_decay": V.nonneg("weight_decay", group["weight_decay"]),
            "amsgrad": V.flag("amsgrad", group["amsgrad"]),
            "maximize": V.flag("maximize", group["maximize"]),
            "decoupled_weight_decay": V.flag("decoupled_weight_decay",
                                             group["decoupled_weight_decay"]),
            "eps_root": V.nonneg("eps_root", group["eps_root"]),
            "eps_mode": V.choice("eps_mode", group["eps_mode"], F.EPS_MODES),
        }

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        if hp["amsgrad"]:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("exp_avg", "exp_avg_sq")

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        F._adam(g, p, state[0], state[1], state[2] if hp["amsgrad"] else None, gs=gs,
                step=step, lr=hp["lr"], beta1=beta1, beta2=beta2, eps=hp["eps"],
                weight_decay=hp["weight_decay"], decoupled=hp["decoupled_weight_decay"],
                eps_root=hp["eps_root"], eps_mode=hp["eps_mode"])
        return {"step": step}


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019): :class:`Adam` with decoupled weight decay.

    .. math::
        \theta \leftarrow \theta(1 - \gamma\lambda), \text{ then the Adam step}

    The decay uses the current (scheduled) learning rate, as torch.optim.AdamW does;
    the default ``weight_decay`` is 1e-2.

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        betas: :math:`(\beta_1, \beta_2)`.
        eps: :math:`\epsilon`.
        weight_decay: :math:`\lambda`.
        amsgrad: use the running maximum of :math:`v`.
        maximize: ascend instead of descend.
        eps_root: added inside the square root (see :class:`Adam`).
        eps_mode: ``"torch"`` or ``"hat"`` (see :class:`Adam`).
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients.

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones(2)
        >>> fastgd.AdamW([w], lr=0.1, weight_decay=0.5).step([np.zeros(2)])
        True
        >>> w
        array([0.95, 0.95])
    """

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, eps_root: float = 0.0, eps_mode: str = "torch",
                 nonfinite: str = "propagate") -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, eps_root=eps_root, eps_mode=eps_mode,
                         nonfinite=nonfinite)
