"""What every rule's functional function shares: array checks and the gradient scale.

Each rule module (``fastgd/optim/<rule>.py``) holds its launcher (scalars folded on the
host in float64, one kernel call), its public functional function and its optimizer
class; :mod:`fastgd.functional` re-exports the functional functions. The functions here
check the caller's arrays before anything is written and fold ``maximize`` into the
gradient scale.
"""

from __future__ import annotations

from typing import Any

from fastgd import _backend
from fastgd import _validate as V

__all__ = ["averaging", "check_momentum_buffer", "decay_terms", "flat_arrays", "scale_of"]


def flat_arrays(param: Any, grad: Any, **state: Any) -> tuple[Any, ...]:
    """Validate ``param``, ``grad`` and the state arrays; return their 1-D views.

    ``None`` state entries stay ``None``. A non-contiguous ``grad`` is copied. Raises before
    anything is written.

    Raises:
        TypeError, ValueError: a dtype, shape, kind, device, contiguity or writeability
            that does not fit, or state arrays that share memory.
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


def scale_of(maximize: bool, grad_scale: float) -> float:
    """The factor a kernel applies to the gradient: ``grad_scale``, negated to maximize."""
    V.flag("maximize", maximize)
    gs = V.real("grad_scale", grad_scale)
    return -gs if maximize else gs


def decay_terms(lr: float, weight_decay: float, decoupled: bool) -> tuple[float, float]:
    """``(l2, decay)``: L2 adds ``l2 * theta`` to the gradient, decoupled scales theta.

    The kernels take both; the form not in use is passed as ``l2 = 0`` / ``decay = 1``.
    """
    if decoupled:
        return 0.0, 1.0 - lr * weight_decay
    return weight_decay, 1.0


def check_momentum_buffer(momentum: float, buffer: Any) -> None:
    """A momentum buffer is given exactly when ``momentum > 0`` (SGD, RMSprop)."""
    if momentum > 0 and buffer is None:
        raise ValueError(f"momentum={momentum} needs a momentum_buffer array")
    if momentum == 0 and buffer is not None:
        raise ValueError("momentum_buffer was given but momentum is 0")


def averaging(flags: tuple[tuple[str, bool], ...], average: Any, p: Any
              ) -> tuple[tuple[tuple[str, bool], ...], tuple[float, float, float], Any]:
    """The weight-averaging stream of an update kernel's launch.

    Every elementwise update kernel ends its scalars with ``avg_w, avg_w1, avg_div``
    (``*avg_s`` in the launchers' comments) and its arrays with ``avg``
    (``kernels/cpu/_jit.averaged``), used by the variant flag ``average``.

    Args:
        flags: the launch's other variant flags.
        average: None, or ``(buffer, w, div)`` from :meth:`fastgd.EMA.weights` /
            :meth:`fastgd.SWA.weights` with the span of the average to update.
        p: the parameter span (stands in for the buffer when there is none).

    Returns:
        ``(flags, (avg_w, avg_w1, avg_div), avg)``, the flags sorted by name.
    """
    if average is None:
        return tuple(sorted((*flags, ("average", False)))), (0.0, 1.0, 0.0), p
    buf, w, div = average
    return tuple(sorted((*flags, ("average", True)))), (w, 1.0 - w, div), buf
