"""Adafactor: second moments factored into row and column statistics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Adafactor", "adafactor_"]


def _eps(name: str, value: Any) -> tuple[float | None, float]:
    """``(eps1, eps2)``: eps1 None (the dtype's machine epsilon) or >= 0, eps2 >= 0."""
    try:
        e1, e2 = tuple(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (eps1 or None, eps2), got {value!r}") from None
    if e1 is not None:
        e1 = V.real(f"{name}[0]", e1)
        if e1 < 0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {e1} ({name}[0])")
    e2 = V.real(f"{name}[1]", e2)
    if e2 < 0:
        raise ValueError(f"epsilon2 should be >= 0 but is: {e2} ({name}[1])")
    return e1, e2


def _beta2_decay(name: str, value: Any) -> float:
    v = V.real(name, value)
    if v > 0:
        raise ValueError(f"beta2_decay should be <= 0 but is: {v}")
    return v


def _clip_threshold(name: str, value: Any) -> float:
    v = V.real(name, value)
    if v < 1:
        raise ValueError(f"Clipping threshold d should be >= 1 but is: {v}")
    return v


def _lerp_weight(step: float, beta2_decay: float) -> float:
    return step**beta2_decay


def _launch_adafactor(g: Any, p: Any, row_var: Any, col_var: Any, variance: Any, *,
                      gs: Any, step: float, lr: float, beta2_decay: float,
                      eps: tuple[float | None, float], d: float,
                      weight_decay: float) -> None:
    """One Adafactor step of one parameter (its natural shape), as torch computes it."""
    n = p.size
    if not n:
        return  # a size-0 parameter is a no-op (torch would divide by zero)
    xp = _backend.xp_of(p)
    cuda = xp is not np
    eps1 = float(np.finfo(p.dtype).eps) if eps[0] is None else eps[0]
    eps1sq = eps1 * eps1
    w = _lerp_weight(step, beta2_decay)  # torch's one_minus_beta2_t
    rho = min(lr, 1.0 / step**0.5)
    decay = 1.0 - lr * weight_decay
    # alpha from the parameter's RMS before the decay
    psq = _backend.reduce("sumsq", p.reshape(-1)).sum()
    usq = xp.empty(1)
    if p.ndim >= 2:
        nb, nr, nc = math.prod(p.shape[:-2]), p.shape[-2], p.shape[-1]
        g3, p3 = g.reshape(nb, nr, nc), p.reshape(nb, nr, nc)
        rv, cv = row_var.reshape(nb, nr), col_var.reshape(nb, nc)
        rows, cols = xp.empty((nb, nr)), xp.empty((nb, nc))
        # kernels/cpu/adafactor.py: sq_sums(g, gs | rows, cols), lerp_means(sums, inv_n, w
        # | stat)
        _backend.launch("adafactor", "sq_sums", (), g3, gs, rows, cols)
        _backend.launch("adafactor", "lerp_means", (), rows, 1.0 / nc, w, rv)
        _backend.launch("adafactor", "lerp_means", (), cols, 1.0 / nr, w, cv)
        rm = xp.maximum(rv.mean(axis=1, dtype=p.dtype), p.dtype.type(eps1))
        # factored_update_sq(g, gs, row_var, col_var, rm, eps1sq | out)
        _backend.launch("adafactor", "factored_update_sq", (), g3, gs, rv, cv, rm, eps1sq,
                        usq)
    else:
        g1, v1 = g.reshape(-1), variance.reshape(-1)
        # vector_stats(g, gs, w | variance); vector_update_sq(g, gs, variance, eps1sq | out)
        _backend.launch("adafactor", "vector_stats", (), g1, gs, w, v1)
        _backend.launch("adafactor", "vector_update_sq", (), g1, gs, v1, eps1sq, usq)
    root_n = n**0.5
    if cuda:  # the step size stays on the device: no host synchronization
        alpha = xp.maximum(eps[1], xp.sqrt(psq) / root_n) * rho
        denom = xp.maximum(1.0, xp.sqrt(usq[0]) / (root_n * d))
        size: Any = (alpha / denom).astype(p.dtype).reshape(1)
    else:
        alpha = max(eps[1], math.sqrt(float(psq)) / root_n) * rho
        size = alpha / max(1.0, math.sqrt(float(usq[0])) / (root_n * d))
    if p.ndim >= 2:
        # factored_apply(g, gs, row_var, col_var, rm, eps1sq, decay, step | p)
        _backend.launch("adafactor", "factored_apply", (), g3, gs, rv, cv, rm, eps1sq, decay,
                        size, p3)
    else:
        # vector_apply(g, gs, variance, eps1sq, decay, step | p)
        _backend.launch("adafactor", "vector_apply", (), g1, gs, v1, eps1sq, decay, size,
                        p.reshape(-1))


def _state_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Torch's Adafactor state shapes: row / column statistics for 2+ dims, else variance."""
    if len(shape) >= 2:
        if name == "row_var":
            return (*shape[:-1], 1)
        if name == "col_var":
            return (*shape[:-2], 1, shape[-1])
        return None
    return shape if name == "variance" else None


def adafactor_(param: Any, grad: Any, row_var: Any = None, col_var: Any = None,
               variance: Any = None, *, step: int, lr: float = 1e-2,
               beta2_decay: float = -0.8, eps: tuple[float | None, float] = (None, 1e-3),
               d: float = 1.0, weight_decay: float = 0.0, maximize: bool = False,
               grad_scale: float = 1.0) -> None:
    r"""One Adafactor step, in place (torch.optim.Adafactor's update).

    With :math:`\hat\beta_t = t^{c}` (``beta2_decay`` :math:`c`),
    :math:`\rho_t = \min(\gamma, 1/\sqrt t)` and
    :math:`\alpha = \max(\epsilon_2, \mathrm{RMS}(\theta))\rho_t`, for a parameter of two or
    more dimensions (rows :math:`R`, columns :math:`C`, leading dimensions batched):

    .. math::
        r \leftarrow \operatorname{lerp}(r, \tfrac1C\textstyle\sum_c g^2, \hat\beta_t);\quad
        c \leftarrow \operatorname{lerp}(c, \tfrac1R\textstyle\sum_r g^2, \hat\beta_t);\quad
        \hat v = \frac{r c^\top}{\max(\bar r, \epsilon_1)};\\
        u = \frac{g}{\sqrt{\max(\hat v, \epsilon_1^2)}};\quad
        \theta \leftarrow \theta(1-\gamma\lambda)
        - \frac{\alpha}{\max(1, \mathrm{RMS}(u)/d)}\,u

    and with a full :math:`v \leftarrow \operatorname{lerp}(v, g^2, \hat\beta_t)` for a vector.
    Shazeer & Stern, 2018. :math:`\epsilon_1` None is the dtype's machine epsilon.

    Args:
        param: parameter, updated in place.
        grad: gradient.
        row_var: row statistics, shape ``param.shape[:-1] + (1,)`` (2+ dimensions).
        col_var: column statistics, shape ``param.shape[:-2] + (1, C)`` (2+ dimensions).
        variance: the full second moment (0-d and 1-d parameters).
        step: 1-based number of this step :math:`t`.
        lr: :math:`\gamma`.
        beta2_decay: :math:`c \le 0`.
        eps: :math:`(\epsilon_1 \text{ or None}, \epsilon_2)`.
        d: clipping threshold :math:`d \ge 1`.
        weight_decay: :math:`\lambda`.
        maximize: ascend instead of descend.
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> w, g = np.ones((2, 3)), np.ones((2, 3))
        >>> r, c = np.zeros((2, 1)), np.zeros((1, 3))
        >>> adafactor_(w, g, r, c, step=1, lr=0.01)
        >>> w.round(4)
        array([[0.99, 0.99, 0.99],
               [0.99, 0.99, 0.99]])
    """
    step = V.step(step)
    hp = Adafactor.check({"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                          "weight_decay": weight_decay, "maximize": maximize},
                         schedules=False)
    gs = scale_of(maximize, grad_scale)
    p = _backend.check_array(param, "param", writeable=True)
    g = _backend.check_array(grad, "grad")
    if g.shape != p.shape or g.dtype != p.dtype or type(g) is not type(p):
        raise ValueError(f"grad must match param: {g.shape} {g.dtype} vs {p.shape} {p.dtype}")
    g = _backend.xp_of(p).ascontiguousarray(g)
    state = {"row_var": row_var, "col_var": col_var, "variance": variance}
    for name, s in state.items():
        want = _state_shape(name, p.shape)
        if (want is None) != (s is None):
            raise ValueError(f"{name} is {'required' if want else 'not used'} for a "
                             f"parameter of shape {p.shape}")
        if s is not None:
            _backend.check_array(s, name, writeable=True)
            if s.shape != want or s.dtype != p.dtype or type(s) is not type(p):
                raise ValueError(f"{name} must be a {p.dtype} array of shape {want}, got "
                                 f"{s.dtype} {s.shape}")
    _launch_adafactor(g, p, row_var, col_var, variance, gs=gs, step=step, lr=hp["lr"],
                      beta2_decay=hp["beta2_decay"], eps=hp["eps"], d=hp["d"],
                      weight_decay=hp["weight_decay"])


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer & Stern, 2018), torch.optim.Adafactor's update and defaults.

    Second moments of a parameter with two or more dimensions are factored into row and
    column statistics (state ``row_var`` of shape ``shape[:-1] + (1,)`` and ``col_var`` of
    ``shape[:-2] + (1, C)``, as torch keeps them: memory O(rows + cols), not
    O(rows x cols)); a vector keeps a full ``variance``. See :func:`adafactor_` for the
    update in math. The step size is relative: :math:`\max(\epsilon_2, \mathrm{RMS}(\theta))
    \min(\gamma, 1/\sqrt t)`, and the update is clipped to RMS ``d``. Each parameter is
    updated whole (its own norms); a size-0 parameter is a no-op (torch divides by zero
    there).

    Args:
        params: arrays, a :class:`~fastgd.FlatParams`, or a list of param-group dicts.
        lr: :math:`\gamma`.
        beta2_decay: :math:`c \le 0`, the decay of the second-moment weight :math:`t^c`.
        eps: :math:`(\epsilon_1, \epsilon_2)`; :math:`\epsilon_1` None is the dtype's
            machine epsilon.
        d: the clipping threshold, >= 1.
        weight_decay: decoupled decay :math:`\lambda`.
        maximize: ascend instead of descend.
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.ones((256, 128), np.float32)
        >>> opt = fastgd.Adafactor([w], lr=0.01)
        >>> opt.step([np.ones_like(w)])
        True
        >>> opt.state[0]["row_var"].shape, opt.state[0]["col_var"].shape
        ((256, 1), (1, 128))
    """

    per_parameter = True

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "beta2_decay": _beta2_decay,
        "eps": _eps,
        "d": _clip_threshold,
        "weight_decay": V.nonneg,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 nonfinite: str = "propagate",
                 average: Averaging | None = None, **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "beta2_decay": beta2_decay, "eps": eps, "d": d,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         nonfinite=nonfinite, average=average, **torch_options)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("row_var", "col_var", "variance")

    def _state_shape(self, name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        return _state_shape(name, shape)

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        step = ss["step"] + 1.0
        _launch_adafactor(g, p, *state, gs=gs, step=step, lr=hp["lr"],
                          beta2_decay=hp["beta2_decay"], eps=hp["eps"], d=hp["d"],
                          weight_decay=hp["weight_decay"])
        return {"step": step}
