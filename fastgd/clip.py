r"""Gradient clipping: global-norm and value clipping, as torch.nn.utils does it.

The norm is a parallel reduction kernel over each gradient array (one pass, float64
partial sums in a fixed chunking, so the result is deterministic whatever the thread
count). Clipping inside an optimizer step is cheaper still:
``opt.step(grads, clip_norm=1.0)`` computes the norm in one pass and feeds the scale to the
update kernel as a scalar, two passes over memory in all instead of three.

Example:
    >>> import numpy as np
    >>> from fastgd.clip import clip_grad_norm_
    >>> g = [np.array([3.0, 4.0])]
    >>> clip_grad_norm_(g, max_norm=1.0)
    5.0
    >>> g[0].round(6)
    array([0.6, 0.8])
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastgd import _backend
from fastgd import _validate as V

__all__ = ["NonFiniteGradientError", "clip_grad_norm_", "clip_grad_value_", "grad_norm"]


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or inf where the policy asks to raise."""


def _norm_type(norm_type: Any) -> float:
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    p = float(norm_type) if isinstance(norm_type, (int, float)) and not isinstance(
        norm_type, bool) else None
    if p is None or math.isnan(p) or p <= 0:
        raise ValueError(f"norm_type must be a number > 0 or inf, got {norm_type!r}")
    return p


def _per_dtype(spans: list[np.ndarray]) -> list[Any]:
    """NumPy arrays as one kernel argument per dtype (:func:`fastgd._backend.per_dtype`).

    Several arrays of a dtype become one :class:`fastgd._backend.MultiSpan` (one call
    reduces or scales them all: 300 arrays cost one launch, not 300); a lone array is
    passed as itself, flattened.
    """
    return [arg for arg, in _backend.per_dtype(spans)]


def total_norm(spans: Iterable[np.ndarray], norm_type: float) -> float:
    """The ``norm_type``-norm of all elements of the C-contiguous arrays ``spans`` together.

    NumPy arrays are reduced by one call per dtype (a multi-array reduction over
    several; the partial sums depend only on the arrays' sizes, so the norm is the same
    for any thread count). CuPy spans are reduced on the device and read once (one
    synchronization per call, not one per array).
    """
    spans = [s for s in spans if s.size]
    if spans and _backend.is_cupy(spans[0]):
        spans = [s.reshape(-1) for s in spans]
        with _backend._cupy().cuda.Device(spans[0].device.id):
            total = float(_device_total(spans, norm_type)[0])
        if norm_type in (math.inf, 1.0):
            return total
        return math.sqrt(total) if norm_type == 2.0 else total ** (1.0 / norm_type)
    spans = _per_dtype(spans) if spans else spans
    if norm_type == math.inf:
        out = 0.0
        for s in spans:
            m = float(np.max(_backend.reduce("absmax", s)))
            if m != m:
                return math.nan
            out = max(out, m)
        return out
    acc = 0.0
    for s in spans:
        if norm_type == 2.0:
            part = _backend.reduce("sumsq", s)
        elif norm_type == 1.0:
            part = _backend.reduce("sumabs", s)
        else:
            part = _backend.reduce("sumpow", s, norm_type)
        acc += float(part.sum())
    if norm_type == 1.0:
        return acc
    if norm_type == 2.0:
        return math.sqrt(acc)
    return acc ** (1.0 / norm_type)


def _device_total(spans: Sequence[Any], norm_type: float) -> Any:
    """The sum of ``|x|^p`` (or the max of ``|x|`` for inf) of CuPy spans, on the device."""
    cp = _backend._cupy()
    total = cp.zeros(1)
    for s in spans:
        if not s.size:
            continue
        if norm_type == math.inf:
            total = cp.maximum(total, _backend.reduce("absmax", s))
        elif norm_type == 2.0:
            total = total + _backend.reduce("sumsq", s)
        elif norm_type == 1.0:
            total = total + _backend.reduce("sumabs", s)
        else:
            total = total + _backend.reduce("sumpow", s, norm_type)
    return total


def clip_coef(max_norm: float, norm: float) -> float:
    """The clipping factor of torch: ``min(1, max_norm / (norm + 1e-6))``, NaN for a NaN norm."""
    coef = max_norm / (norm + 1e-6)
    return coef if not coef >= 1.0 else 1.0


def device_clip_scale(spans: Sequence[Any], norm_type: float, max_norm: float, scale: float,
                      like: Any, dtypes: Sequence[Any] = ()) -> tuple[Any, Any]:
    """The clipped gradient scale and the norm, computed on the GPU without a sync.

    Args:
        spans: the CuPy gradient spans of the step.
        norm_type: ``p`` or ``inf``.
        max_norm: the clipping bound.
        scale: the step's ``grad_scale``.
        like: an array of the parameters' device (and dtype, when ``dtypes`` is empty).
        dtypes: the parameters' dtypes: one scale array is made per dtype (each update
            kernel takes its scale as ``raw T gs``, of its own dtype).

    Returns:
        ``(gs, norm)``: the 1-element device array ``scale * min(1, max_norm / (norm +
        1e-6))`` of ``like``'s dtype, or a dict ``{dtype: array}`` when ``dtypes`` is given;
        and the norm (of the scaled gradients) as a 0-d device array.
    """
    cp = _backend._cupy()
    from fastgd.kernels.cuda.reduce import clip_coef

    with cp.cuda.Device(like.device.id):
        total = _device_total(spans, norm_type)
        power = 0.0 if norm_type == math.inf else norm_type
        out = {}
        for dt in (dtypes or (like.dtype,)):
            gs = cp.empty(1, dt)
            clip_coef(total, float(max_norm), power, float(scale), gs)
            out[np.dtype(dt)] = gs
        norm = total if power == 0.0 else total ** (1.0 / power)
        return (out if dtypes else out[np.dtype(like.dtype)],
                (norm * abs(float(scale))).reshape(()))


def all_finite(spans: Iterable[np.ndarray]) -> bool:
    """Whether every element of the arrays ``spans`` is finite (one read pass).

    NumPy arrays are checked by one call per dtype; CuPy spans on the device, read once.
    """
    spans = [s for s in spans if s.size]
    if spans and _backend.is_cupy(spans[0]):
        cp = _backend._cupy()
        with cp.cuda.Device(spans[0].device.id):
            bad = cp.zeros(1)
            for s in spans:
                bad = bad + _backend.reduce("nonfinite", s)
            return float(bad[0]) == 0.0
    for s in _per_dtype(spans) if spans else spans:
        if not float(_backend.reduce("nonfinite", s).sum()) == 0.0:
            return False
    return True


def _grad_list(grads: Any, name: str = "grads", writeable: bool = True) -> list[np.ndarray]:
    if isinstance(grads, np.ndarray) or _backend.is_cupy(grads):
        grads = [grads]
    if not isinstance(grads, (Sequence, Iterable)):
        raise TypeError(f"{name} must be an array or a list of arrays, got "
                        f"{type(grads).__name__}")
    if type(grads) in (list, tuple) and _plain_numpy(grads, writeable):
        return list(grads)
    out = []
    for i, g in enumerate(grads):
        if g is None:
            continue
        _backend.check_array(g, f"{name}[{i}]", writeable=writeable)
        out.append(g)
    return out


_FLOATS = frozenset(_backend.FLOAT_DTYPES)
_DTYPE = operator.attrgetter("dtype")
_FLAGS = operator.attrgetter("flags")
_C_CONTIGUOUS = operator.attrgetter("c_contiguous")
_WRITEABLE = operator.attrgetter("writeable")


def _plain_numpy(grads: Sequence[Any], writeable: bool) -> bool:
    """Whether ``grads`` are NumPy arrays that :func:`_backend.check_array` accepts.

    The common case, checked a list at a time (a few C-level passes, ~0.15 us an array
    instead of ~0.4); anything else, None included, goes through the per-array check,
    which accepts it or raises the error that names it.
    """
    if not grads or set(map(type, grads)) != {np.ndarray}:
        return False
    if not set(map(_DTYPE, grads)) <= _FLOATS:
        return False
    if writeable:
        flags = list(map(_FLAGS, grads))
        return all(map(_C_CONTIGUOUS, flags)) and all(map(_WRITEABLE, flags))
    return True


def grad_norm(grads: Any, norm_type: float | str = 2.0) -> float:
    r"""The total norm of all gradients, as if concatenated into one vector.

    .. math:: \|g\|_p = \Big(\sum_i |g_i|^p\Big)^{1/p},\quad \|g\|_\infty = \max_i |g_i|

    Args:
        grads: an array or a list of arrays (``None`` entries are ignored).
        norm_type: ``p > 0`` or ``inf`` (``"inf"``).

    Returns:
        The norm as a Python float (NaN or inf when a gradient is not finite).

    Example:
        >>> grad_norm([np.array([3.0]), np.array([4.0])])
        5.0
    """
    p = _norm_type(norm_type)
    # total_norm reads C-contiguous arrays: a strided view is copied first
    return total_norm([g if g.flags.c_contiguous else _backend.xp_of(g).ascontiguousarray(g)
                       for g in _grad_list(grads, writeable=False)], p)


def clip_grad_norm_(grads: Any, max_norm: float, norm_type: float | str = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    r"""Scale gradients in place so that their total norm is at most ``max_norm``.

    torch.nn.utils.clip_grad_norm_'s rule:

    .. math:: g \leftarrow g\cdot\min\Big(1, \frac{\text{max\_norm}}{\|g\| + 10^{-6}}\Big)

    Args:
        grads: an array or a list of arrays, updated in place.
        max_norm: the bound, finite and >= 0.
        norm_type: ``p > 0`` or ``inf``.
        error_if_nonfinite: raise :class:`NonFiniteGradientError` (and change nothing) if
            the norm is NaN or inf.

    Returns:
        The total norm before clipping.

    Example:
        >>> g = [np.array([0.3, 0.4])]
        >>> clip_grad_norm_(g, 1.0), g[0]
        (0.5, array([0.3, 0.4]))
    """
    max_norm = V.nonneg("max_norm", max_norm)
    p = _norm_type(norm_type)
    V.flag("error_if_nonfinite", error_if_nonfinite)
    gl = _grad_list(grads)
    norm = total_norm(gl, p)
    if error_if_nonfinite and not math.isfinite(norm):
        raise NonFiniteGradientError(
            f"the total norm of order {norm_type} of the gradients is {norm}; "
            "set error_if_nonfinite=False to clip anyway"
        )
    coef = clip_coef(max_norm, norm)
    if coef != 1.0:
        for s in _scaled_args(gl):
            _backend.launch("reduce", "scale", (), coef, s)
    return norm


def _scaled_args(gl: list[Any]) -> list[Any]:
    """The non-empty arrays as elementwise-kernel arguments.

    One per dtype for NumPy arrays (a multi-array launch); each flattened for CuPy ones.
    """
    live = [g for g in gl if g.size]
    # an array listed twice is scaled twice, in turn (as one call per array would): the
    # threads of one launch would race on it
    if live and type(live[0]) is np.ndarray and len(set(map(id, live))) == len(live):
        return _per_dtype(live)
    return [g.reshape(-1) for g in live]


def clip_grad_value_(grads: Any, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    NaN stays NaN (as torch.clamp).

    Args:
        grads: an array or a list of arrays, updated in place.
        clip_value: the bound, finite and >= 0.

    Example:
        >>> g = [np.array([-3.0, 0.5, 2.0])]
        >>> clip_grad_value_(g, 1.0); g[0]
        array([-1. ,  0.5,  1. ])
    """
    c = V.nonneg("clip_value", clip_value)
    for s in _scaled_args(_grad_list(grads)):
        _backend.launch("reduce", "clamp", (), -c, c, s)
