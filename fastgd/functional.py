r"""Stateless, in-place update rules: the kernel boundary, for NumPy pipelines.

Each ``<rule>_`` function updates ``param`` and its state arrays in place with one fused
kernel pass, exactly as one step of the matching optimizer class (and of torch.optim) would.
The caller owns the state: create it with ``np.zeros_like(param)`` (Adagrad's sum with its
initial value) and pass the 1-based ``step`` number of the update being taken.

Arrays: ``param`` and the state arrays must be writeable, C-contiguous float32 or float64
arrays of one shape and dtype; ``grad`` must have that shape and dtype (a non-contiguous
``grad`` is copied). Any shape works, 0-d and size 0 included. Every argument is checked
before anything is written, so a call that raises changes nothing.

``grad_scale`` multiplies the gradient inside the kernel (``maximize`` flips its sign), so
a clipping factor costs no extra pass over memory.

The optimizer classes in :mod:`fastgd.optim` call the same private launchers as these
functions, so the two cannot drift apart.

Example:
    >>> import numpy as np
    >>> from fastgd import functional as F
    >>> p = np.ones(3, np.float32); g = np.full(3, 0.5, np.float32)
    >>> m, v = np.zeros_like(p), np.zeros_like(p)
    >>> F.adam_(p, g, m, v, step=1, lr=0.1)
    >>> p.round(4)
    array([0.9, 0.9, 0.9], dtype=float32)
"""

from __future__ import annotations

from typing import Any

from fastgd import _backend
from fastgd import _validate as V

__all__ = [
    "adadelta_",
    "adagrad_",
    "adam_",
    "adamax_",
    "adamw_",
    "lion_",
    "nadam_",
    "radam_",
    "rmsprop_",
    "sgd_",
]

_launch = _backend.launch

#: Where Adam's epsilon goes: "torch" (after bias-correcting sqrt(v): torch, optax) or "hat"
#: (added to sqrt(v) before it: Kingma & Ba's epsilon-hat, TensorFlow, Keras).
EPS_MODES = ("torch", "hat")


# ---------------------------------------------------------------------------------------
# Private launchers: scalars folded on the host in float64, one kernel call. Arguments are
# 1-D arrays already validated; ``gs`` is the gradient scale (-1 for maximize, times a
# clipping factor).
# ---------------------------------------------------------------------------------------


def _sgd(g, p, buf, *, gs, lr, momentum, dampening, weight_decay, nesterov, first):
    if buf is None:
        _launch("sgd", "sgd", (), g, gs, weight_decay, lr, p)
    else:
        damp = 1.0 if first else 1.0 - dampening
        _launch("sgd", "sgd_momentum", (("nesterov", nesterov),),
                g, gs, weight_decay, lr, momentum, damp, p, buf)


def _adagrad(g, p, s, *, gs, step, lr, lr_decay, weight_decay, eps):
    clr = lr / (1.0 + (step - 1.0) * lr_decay)
    _launch("adagrad", "adagrad", (), g, gs, weight_decay, clr, eps, p, s)


def _adadelta(g, p, u, a, *, gs, lr, rho, eps, weight_decay):
    _launch("adadelta", "adadelta", (), g, gs, weight_decay, rho, 1.0 - rho, eps, lr, p, u, a)


def _rmsprop(g, p, sq, ga, buf, *, gs, lr, alpha, eps, weight_decay, momentum):
    flags = (("centered", ga is not None), ("use_momentum", buf is not None))
    _launch("rmsprop", "rmsprop", flags, g, gs, weight_decay, alpha, 1.0 - alpha, eps, lr,
            momentum, p, sq, p if ga is None else ga, p if buf is None else buf)


def _decay_terms(lr, weight_decay, decoupled):
    """(l2, decay): L2 adds ``l2 * theta`` to the gradient, decoupled scales theta."""
    if decoupled:
        return 0.0, 1.0 - lr * weight_decay
    return weight_decay, 1.0


def _adam(g, p, m, v, vmax, *, gs, step, lr, beta1, beta2, eps, weight_decay, decoupled,
          eps_root=0.0, eps_mode="torch"):
    l2, decay = _decay_terms(lr, weight_decay, decoupled)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    if eps_mode == "hat":  # eps + sqrt(v) before bias correction: eps / sqrt(bc2) after it
        eps = eps / bc2**0.5
    _launch("adam", "adam", (("amsgrad", vmax is not None),),
            g, gs, l2, decay, 1.0 - beta1, beta2, 1.0 - beta2, bc2**0.5, eps, eps_root * bc2,
            lr / bc1, p, m, v, p if vmax is None else vmax)


def _adamax(g, p, m, u, *, gs, step, lr, beta1, beta2, eps, weight_decay):
    clr = lr / (1.0 - beta1**step)
    _launch("adamax", "adamax", (), g, gs, weight_decay, 1.0 - beta1, beta2, eps, clr, p, m, u)


def _nadam(g, p, m, v, *, gs, step, mu_product, lr, beta1, beta2, eps, weight_decay,
           momentum_decay, decoupled):
    l2, decay = _decay_terms(lr, weight_decay, decoupled)
    bc2 = 1.0 - beta2**step
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1.0) * momentum_decay)))
    mu_product = mu_product * mu
    c_grad = lr * (1.0 - mu) / (1.0 - mu_product)
    c_avg = lr * mu_next / (1.0 - mu_product * mu_next)
    _launch("nadam", "nadam", (), g, gs, l2, decay, 1.0 - beta1, beta2, 1.0 - beta2, bc2, eps,
            c_grad, c_avg, p, m, v)
    return mu_product


def _radam(g, p, m, v, *, gs, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    l2, decay = _decay_terms(lr, weight_decay, decoupled)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2**step) / bc2
    rect = 0.0
    if rho_t > 5.0:
        rect = (((rho_t - 4.0) * (rho_t - 2.0) * rho_inf)
                / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) ** 0.5
    _launch("radam", "radam", (), g, gs, l2, decay, 1.0 - beta1, beta2, 1.0 - beta2, bc1, lr,
            rect, bc2**0.5, eps, p, m, v)


def _lion(g, p, m, *, gs, lr, beta1, beta2, weight_decay):
    _launch("lion", "lion", (), g, gs, weight_decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2,
            lr, p, m)


# ---------------------------------------------------------------------------------------
# Array validation for the public functions.
# ---------------------------------------------------------------------------------------


def _flat(param: Any, grad: Any, **state: Any) -> tuple[Any, ...]:
    """Validate ``param``, ``grad`` and the state arrays; return their 1-D views.

    ``None`` state entries stay ``None``. Raises before anything is written.
    """
    p = _backend.check_array(param, "param", writeable=True)
    g = _backend.check_array(grad, "grad")
    if g.shape != p.shape:
        raise ValueError(f"grad has shape {g.shape}, param has shape {p.shape}")
    if g.dtype != p.dtype:
        raise TypeError(f"grad has dtype {g.dtype}, param has dtype {p.dtype}")
    if type(g) is not type(p) or _backend.device_of(g) != _backend.device_of(p):
        raise TypeError(f"grad is a {_backend.kind(g)}, param is a {_backend.kind(p)}"
                        + (f" (devices {_backend.device_of(g)} and {_backend.device_of(p)})"
                           if type(g) is type(p) else ""))
    xp = _backend.xp_of(p)
    out = [xp.ascontiguousarray(g).reshape(-1), p.reshape(-1)]
    written = {"param": p}
    for name, s in state.items():
        if s is None:
            out.append(None)
            continue
        s = _backend.check_array(s, name, writeable=True)
        if type(s) is not type(p) or _backend.device_of(s) != _backend.device_of(p):
            raise TypeError(f"{name} is a {_backend.kind(s)}, param is a {_backend.kind(p)}")
        if s.shape != p.shape:
            raise ValueError(f"{name} has shape {s.shape}, param has shape {p.shape}")
        if s.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {s.dtype}, param has dtype {p.dtype}")
        for other, a in written.items():
            # contiguous arrays: overlapping bounds means shared memory
            if s.size and xp.may_share_memory(s, a):
                raise ValueError(f"{name} shares memory with {other}")
        written[name] = s
        out.append(s.reshape(-1))
    return tuple(out)


def _gs(maximize: bool, grad_scale: float) -> float:
    V.flag("maximize", maximize)
    gs = V.real("grad_scale", grad_scale)
    return -gs if maximize else gs


# ---------------------------------------------------------------------------------------
# Public rules.
# ---------------------------------------------------------------------------------------


def sgd_(param: Any, grad: Any, momentum_buffer: Any = None, *, lr: float,
         momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
         nesterov: bool = False, maximize: bool = False, step: int | None = None,
         grad_scale: float = 1.0) -> None:
    r"""One SGD step, in place (torch.optim.SGD's update).

    .. math::
        g \leftarrow g + \lambda\theta;\quad
        b \leftarrow \mu b + (1-\tau) g \ (b \leftarrow g \text{ at step 1});\quad
        \theta \leftarrow \theta - \gamma\,(g + \mu b \text{ if nesterov else } b)

    Args:
        param: parameter, updated in place.
        grad: gradient, same shape and dtype.
        momentum_buffer: the momentum state (zeros before step 1); required iff
            ``momentum > 0``.
        lr: learning rate :math:`\gamma`.
        momentum: :math:`\mu`.
        dampening: :math:`\tau`, not applied at step 1.
        weight_decay: L2 coefficient :math:`\lambda`.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: ascend instead of descend.
        step: 1-based number of this step; required with a momentum buffer.
        grad_scale: factor applied to the gradient first (e.g. a clipping scale).

    Example:
        >>> import numpy as np
        >>> p, g = np.ones(2), np.ones(2)
        >>> sgd_(p, g, lr=0.5); p
        array([0.5, 0.5])
    """
    lr = V.lr(lr)
    momentum = V.nonneg("momentum", momentum)
    dampening = V.real("dampening", dampening)
    weight_decay = V.nonneg("weight_decay", weight_decay)
    V.flag("nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    gs = _gs(maximize, grad_scale)
    if momentum > 0 and momentum_buffer is None:
        raise ValueError(f"momentum={momentum} needs a momentum_buffer array")
    if momentum == 0 and momentum_buffer is not None:
        raise ValueError("momentum_buffer was given but momentum is 0")
    if momentum_buffer is not None:
        if step is None:
            raise ValueError("step is required with a momentum_buffer (step 1 copies the grad)")
        step = V.step(step)
    g, p, buf = _flat(param, grad, momentum_buffer=momentum_buffer)
    _sgd(g, p, buf, gs=gs, lr=lr, momentum=momentum, dampening=dampening,
         weight_decay=weight_decay, nesterov=nesterov, first=step == 1.0)


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
    lr = V.lr(lr)
    lr_decay = V.nonneg("lr_decay", lr_decay)
    weight_decay = V.nonneg("weight_decay", weight_decay)
    eps = V.nonneg("eps", eps, "epsilon")
    gs = _gs(maximize, grad_scale)
    g, p, s = _flat(param, grad, state_sum=state_sum)
    _adagrad(g, p, s, gs=gs, step=step, lr=lr, lr_decay=lr_decay,
             weight_decay=weight_decay, eps=eps)


def adadelta_(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *, lr: float = 1.0,
              rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
              maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One Adadelta step, in place (torch.optim.Adadelta's update).

    .. math::
        u \leftarrow \rho u + (1-\rho) g^2;\quad
        \Delta = \frac{\sqrt{a + \epsilon}}{\sqrt{u + \epsilon}}\, g;\quad
        a \leftarrow \rho a + (1-\rho)\Delta^2;\quad \theta \leftarrow \theta - \gamma\Delta

    Args:
        param: parameter, updated in place.
        grad: gradient.
        square_avg: :math:`u`.
        acc_delta: :math:`a`.
        lr: :math:`\gamma` (1.0 is the paper's rule).
        rho: :math:`\rho` in [0, 1].
        eps: :math:`\epsilon`, inside both roots.
        weight_decay: L2 coefficient.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, u, a = np.ones(1), np.ones(1), np.zeros(1), np.zeros(1)
        >>> adadelta_(p, g, u, a, eps=1e-6); bool(p[0] < 1)
        True
    """
    lr = V.lr(lr)
    rho = V.closed_unit("rho", rho)
    eps = V.nonneg("eps", eps, "epsilon")
    weight_decay = V.nonneg("weight_decay", weight_decay)
    gs = _gs(maximize, grad_scale)
    g, p, u, a = _flat(param, grad, square_avg=square_avg, acc_delta=acc_delta)
    _adadelta(g, p, u, a, gs=gs, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


def rmsprop_(param: Any, grad: Any, square_avg: Any, grad_avg: Any = None,
             momentum_buffer: Any = None, *, lr: float = 1e-2, alpha: float = 0.99,
             eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
             maximize: bool = False, grad_scale: float = 1.0) -> None:
    r"""One RMSprop step, in place (torch.optim.RMSprop's update).

    .. math::
        s \leftarrow \alpha s + (1-\alpha) g^2;\quad
        \bar g \leftarrow \bar g + (1-\alpha)(g - \bar g)\ \text{(centered)};\quad
        d = \sqrt{s - \bar g^2} + \epsilon \ \text{or}\ \sqrt{s} + \epsilon;\\
        b \leftarrow \mu b + g/d,\ \theta \leftarrow \theta - \gamma b
        \ \text{(momentum)};\ \text{else}\ \theta \leftarrow \theta - \gamma g/d

    Args:
        param: parameter, updated in place.
        grad: gradient.
        square_avg: :math:`s`.
        grad_avg: :math:`\bar g`; passing it selects the centered variant.
        momentum_buffer: :math:`b`; required iff ``momentum > 0``.
        lr: :math:`\gamma`.
        alpha: smoothing constant :math:`\alpha`.
        eps: :math:`\epsilon`, outside the root.
        weight_decay: L2 coefficient.
        momentum: :math:`\mu`.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> p, g, s = np.ones(1), np.ones(1), np.zeros(1)
        >>> rmsprop_(p, g, s, lr=0.01); p.round(3)
        array([0.9])
    """
    lr = V.lr(lr)
    alpha = V.nonneg("alpha", alpha)
    eps = V.nonneg("eps", eps, "epsilon")
    weight_decay = V.nonneg("weight_decay", weight_decay)
    momentum = V.nonneg("momentum", momentum)
    gs = _gs(maximize, grad_scale)
    if momentum > 0 and momentum_buffer is None:
        raise ValueError(f"momentum={momentum} needs a momentum_buffer array")
    if momentum == 0 and momentum_buffer is not None:
        raise ValueError("momentum_buffer was given but momentum is 0")
    g, p, sq, ga, buf = _flat(param, grad, square_avg=square_avg, grad_avg=grad_avg,
                              momentum_buffer=momentum_buffer)
    _rmsprop(g, p, sq, ga, buf, gs=gs, lr=lr, alpha=alpha, eps=eps,
             weight_decay=weight_decay, momentum=momentum)


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
    :math:`(\sqrt{\hat v + \epsilon_r(1-\beta_2^t)} + \epsilon)/\sqrt{1-\beta_2^t}`.
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
    lr = V.lr(lr)
    beta1 = V.beta("beta1", beta1, 0)
    beta2 = V.beta("beta2", beta2, 1)
    eps = V.nonneg("eps", eps, "epsilon")
    weight_decay = V.nonneg("weight_decay", weight_decay)
    V.flag("decoupled_weight_decay", decoupled_weight_decay)
    eps_root = V.nonneg("eps_root", eps_root)
    V.choice("eps_mode", eps_mode, EPS_MODES)
    gs = _gs(maximize, grad_scale)
    g, p, m, v, vmax = _flat(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq,
                             max_exp_avg_sq=max_exp_avg_sq)
    _adam(g, p, m, v, vmax, gs=gs, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
          weight_decay=weight_decay, decoupled=decoupled_weight_decay, eps_root=eps_root,
          eps_mode=eps_mode)


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
    lr = V.lr(lr)
    beta1 = V.beta("beta1", beta1, 0)
    beta2 = V.beta("beta2", beta2, 1)
    eps = V.nonneg("eps", eps, "epsilon")
    weight_decay = V.nonneg("weight_decay", weight_decay)
    gs = _gs(maximize, grad_scale)
    g, p, m, u = _flat(param, grad, exp_avg=exp_avg, exp_inf=exp_inf)
    _adamax(g, p, m, u, gs=gs, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay)


def nadam_(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, step: int,
           mu_product: float, lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999,
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
    lr = V.lr(lr)
    beta1 = V.beta("beta1", beta1, 0)
    beta2 = V.beta("beta2", beta2, 1)
    eps = V.nonneg("eps", eps, "epsilon")
    weight_decay = V.nonneg("weight_decay", weight_decay)
    momentum_decay = V.nonneg("momentum_decay", momentum_decay)
    V.flag("decoupled_weight_decay", decoupled_weight_decay)
    gs = _gs(maximize, grad_scale)
    g, p, m, v = _flat(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    return _nadam(g, p, m, v, gs=gs, step=step, mu_product=mu_product, lr=lr, beta1=beta1,
                  beta2=beta2, eps=eps, weight_decay=weight_decay,
                  momentum_decay=momentum_decay, decoupled=decoupled_weight_decay)


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
    lr = V.lr(lr)
    beta1 = V.beta("beta1", beta1, 0)
    beta2 = V.beta("beta2", beta2, 1)
    eps = V.nonneg("eps", eps, "epsilon")
    weight_decay = V.nonneg("weight_decay", weight_decay)
    V.flag("decoupled_weight_decay", decoupled_weight_decay)
    gs = _gs(maximize, grad_scale)
    g, p, m, v = _flat(param, grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    _radam(g, p, m, v, gs=gs, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
           weight_decay=weight_decay, decoupled=decoupled_weight_decay)


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
    lr = V.lr(lr)
    beta1 = V.beta("beta1", beta1, 0)
    beta2 = V.beta("beta2", beta2, 1)
    weight_decay = V.nonneg("weight_decay", weight_decay)
    gs = _gs(maximize, grad_scale)
    g, p, m = _flat(param, grad, exp_avg=exp_avg)
    _lion(g, p, m, gs=gs, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay)
