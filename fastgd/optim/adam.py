"""Adam and AdamW (optionally AMSGrad)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import averaging, decay_terms, flat_arrays, scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["EPS_MODES", "Adam", "AdamW", "adam_", "adamw_"]


#: Where Adam's epsilon goes: "torch" (after bias-correcting sqrt(v): torch, optax) or "hat"
#: (added to sqrt(v) before it: Kingma & Ba's epsilon-hat, TensorFlow, Keras).
EPS_MODES = ("torch", "hat")


def _launch_adam(g: Any, p: Any, m: Any, v: Any, vmax: Any, *, gs: Any, step: float,
                 lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                 decoupled: bool, eps_root: float = 0.0, eps_mode: str = "torch",
                 average: Any = None) -> None:
    l2, decay = decay_terms(lr, weight_decay, decoupled)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    bc2_sqrt, step_size = bc2**0.5, lr / bc1
    if eps_mode == "hat":  # Keras / scikit-learn: lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps)
        bc2_sqrt, step_size = 1.0, lr * bc2_sqrt / bc1
    # kernels/cpu/adam.py: adam(g, gs, l2, decay, one_minus_beta1, beta2, one_minus_beta2,
    # bc2_sqrt, eps, eps_root_bc2, step_size, *avg_s | p, m, v, vmax, avg); vmax is only
    # touched by the AMSGrad variant
    flags, avg_s, avg = averaging((("amsgrad", vmax is not None),), average, p)
    _backend.launch("adam", "adam", flags, g, gs, l2, decay, 1.0 - beta1, beta2, 1.0 - beta2,
                    bc2_sqrt, eps, eps_root * bc2, step_size, *avg_s, p, m, v,
                    p if vmax is None else vmax, avg)


def adam_(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
          *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          maximize: bool = False, grad_scale: float = 1.0, eps_root: float = 0.0,
          eps_mode: str = "torch") -> None:
    r"""One Adam step, in place (torch.optim.Adam's update).

    .. math::
        m \leftarrow m + (1-\beta_1)(g - m);\quad v \leftarrow \beta_2 v + (1-\beta_2)g^2;\\
        \theta \leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\,
        \frac{m}{\sqrt{\hat v/(1-\beta_2^t) + \epsilon_r} + \epsilon}

    with :math:`\hat v = v`, or the running maximum of :math:`v` (AMSGrad, when
    ``max_exp_avg_sq`` is given), and :math:`\epsilon_r` = ``eps_root`` (0 by default:
    torch's update, bit for bit). ``eps_mode="hat"`` adds :math:`\epsilon` to
    :math:`\sqrt{\hat v}` before the bias correction instead (Kingma & Ba's
    :math:`\hat\epsilon`, as TensorFlow / Keras do): the denominator becomes
    :math:`(\sqrt{\hat v + \epsilon_r(1-\beta_2^t)} + \epsilon)/\sqrt{1-\beta_2^t}`,
    computed in their order (step size
    :math:`\gamma\sqrt{1-\beta_2^t}/(1-\beta_1^t)` times
    :math:`m/(\sqrt{\hat v + \epsilon_r(1-\beta_2^t)} + \epsilon)`: one division fewer).
    Weight decay is L2 (:math:`g \leftarrow g + \lambda\theta`) or, with
    ``decoupled_weight_decay``, AdamW's :math:`\theta \leftarrow \theta(1-\gamma\lambda)`
    (Loshchilov & Hutter, 2019). Kingma & Ba, 2015.

    Args:
        param: parameter, updated in place.
        grad: gradient.
        exp_avg: first moment :math:`m`.
        exp_avg_sq: second moment :math:`v`.
        max_exp_avg_sq: running max of :math:`v`; passing it selects AMSGrad.
        step: 1-based number of this step :math:`t`.
        lr: :math:`\gamma`.
        beta1: :math:`\beta_1` in [0, 1).
        beta2: :math:`\beta_2` in [0, 1).
        eps: :math:`\epsilon`, added after bias-correcting :math:`\sqrt v` (torch's form).
        weight_decay: :math:`\lambda`.
        decoupled_weight_decay: AdamW's decay instead of L2.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.
        eps_root: :math:`\epsilon_r` >= 0, added inside the square root (optax's
            ``eps_root``).
        eps_mode: ``"torch"`` (torch, optax) or ``"hat"`` (TensorFlow, Keras).

    Example:
        >>> import numpy as np
        >>> p, g = np.ones(1), np.ones(1)
        >>> m, v = np.zeros(1), np.zeros(1)
        >>> adam_(p, g, m, v, step=1, lr=0.1); p.round(6)
        array([0.9])
    """
    step = V.step(step)
    hp = Adam.check({"lr": lr, "betas": (beta1, beta2), "eps": eps,
                     "weight_decay": weight_decay, "amsgrad": max_exp_avg_sq is not None,
                     "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay,
                     "eps_root": eps_root, "eps_mode": eps_mode}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    g, p, m, v, vmax = flat_arrays(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                                   max_exp_avg_sq=max_exp_avg_sq)
    (b1, b2) = hp["betas"]
    _launch_adam(g, p, m, v, vmax, gs=gs, step=step, lr=hp["lr"], beta1=b1, beta2=b2, eps=hp["eps"],
                 weight_decay=hp["weight_decay"], decoupled=hp["decoupled_weight_decay"],
                 eps_root=hp["eps_root"], eps_mode=hp["eps_mode"])


def adamw_(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
           *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
           eps: float = 1e-8, weight_decay: float = 1e-2, maximize: bool = False,
           grad_scale: float = 1.0, eps_root: float = 0.0, eps_mode: str = "torch") -> None:
    r"""One AdamW step, in place: :func:`adam_` with decoupled weight decay.

    .. math:: \theta \leftarrow \theta(1 - \gamma\lambda), \text{ then the Adam step.}

    Args:
        param: parameter, updated in place.
        grad: gradient.
        exp_avg: first moment.
        exp_avg_sq: second moment.
        max_exp_avg_sq: running max of the second moment (AMSGrad).
        step: 1-based number of this step.
        lr: learning rate.
        beta1: first-moment coefficient.
        beta2: second-moment coefficient.
        eps: denominator term.
        weight_decay: decoupled decay :math:`\lambda` (default 1e-2, as torch).
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.
        eps_root: added inside the square root (see :func:`adam_`).
        eps_mode: ``"torch"`` or ``"hat"`` (see :func:`adam_`).

    Example:
        >>> import numpy as np
        >>> p, g, m, v = np.ones(1), np.zeros(1), np.zeros(1), np.zeros(1)
        >>> adamw_(p, g, m, v, step=1, lr=0.1, weight_decay=0.5); p
        array([0.95])
    """
    adam_(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1,
          beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=True,
          maximize=maximize, grad_scale=grad_scale, eps_root=eps_root, eps_mode=eps_mode)


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
    :math:`(\sqrt{\hat v + \epsilon_r(1-\beta_2^t)} + \epsilon)/\sqrt{1-\beta_2^t}`
    (computed as they do: the step size :math:`\gamma\sqrt{1-\beta_2^t}/(1-\beta_1^t)`
    times :math:`m/(\sqrt{\hat v} + \epsilon)`, one division per element fewer).

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
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).
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

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "betas": V.betas,
        "eps": V.epsilon,
        "weight_decay": V.nonneg,
        "amsgrad": V.flag,
        "maximize": V.flag,
        "decoupled_weight_decay": V.flag,
        "eps_root": V.nonneg,
        "eps_mode": V.one_of(*EPS_MODES),
    }

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False, eps_root: float = 0.0,
                 eps_mode: str = "torch", nonfinite: str = "propagate",
                 average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad,
                                  "maximize": maximize,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "eps_root": eps_root, "eps_mode": eps_mode},
                         nonfinite=nonfinite, average=average,
                         **torch_options)

    _added_hyperparameters: ClassVar[dict[str, Any]] = {
        **Optimizer._added_hyperparameters, "eps_root": 0.0, "eps_mode": "torch"}

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        if hp["amsgrad"]:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("exp_avg", "exp_avg_sq")

    #: the update kernel carries the weight average as one more stream
    fused_average: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True

    def _update(self, hp, ss: Scalars, gs, g, p, state, average=None) -> Scalars:
        step = ss["step"] + 1.0
        beta1, beta2 = hp["betas"]
        _launch_adam(g, p, state[0], state[1], state[2] if hp["amsgrad"] else None, gs=gs,
                     step=step, lr=hp["lr"], beta1=beta1, beta2=beta2, eps=hp["eps"],
                     weight_decay=hp["weight_decay"], decoupled=hp["decoupled_weight_decay"],
                     eps_root=hp["eps_root"], eps_mode=hp["eps_mode"], average=average)
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
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

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
                 nonfinite: str = "propagate",
                 average: Averaging | None = None, **torch_options: Any) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, eps_root=eps_root, eps_mode=eps_mode,
                         nonfinite=nonfinite, average=average, **torch_options)
