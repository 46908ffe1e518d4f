"""Muon: momentum orthogonalized by Newton-Schulz iterations, for 2-D weight matrices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastgd import _backend
from fastgd import _validate as V
from fastgd.averaging import Averaging
from fastgd.optim._functional import scale_of
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import lr_or_schedule

__all__ = ["Muon", "muon_"]

#: torch's defaults: the quintic iteration's coefficients, its steps and epsilon
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _coefficients(name: str, value: Any) -> tuple[float, float, float]:
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be three numbers, got {value!r}") from None
    if len(items) != 3:
        raise ValueError(f"Coefficients must be a tuple of exactly 3 values ({name}, got "
                         f"{value!r})")
    a, b, c = (V.real(f"{name}[{i}]", v) for i, v in enumerate(items))
    return a, b, c


def _ns_steps(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if value >= 100:
        raise ValueError(f"Number of steps must be less than 100 for computational "
                         f"efficiency ({name}={value})")
    return value


def _adjust_lr_fn(name: str, value: Any) -> str | None:
    if value not in ADJUST_LR_FNS or not (value is None or isinstance(value, str)):
        raise ValueError(f"Adjust learning rate function {value} is not supported ({name} "
                         f"must be one of {ADJUST_LR_FNS})")
    return value


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """Torch's learning-rate adjustment for an ``A x B`` matrix.

    ``"original"`` (the default, Keller Jordan's): ``lr * sqrt(max(1, A / B))``;
    ``"match_rms_adamw"`` (Moonshot's): ``lr * 0.2 * sqrt(max(A, B))``.
    """
    a, b = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return lr * max(1.0, a / b) ** 0.5
    return lr * 0.2 * max(a, b) ** 0.5


def _check_2d(p: Any, name: str) -> None:
    if p.ndim != 2:
        raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with "
                         f"size: {p.shape} ({name})")


class _Workspace:
    """The Newton-Schulz iteration's matrices for one parameter shape (allocated once)."""

    def __init__(self, xp: Any, shape: tuple[int, int], dtype: Any) -> None:
        m, n = sorted(shape)  # the iteration runs on the wide orientation (m <= n)
        self.upd = xp.empty(shape, dtype)
        self.x = xp.empty((m, n), dtype)
        self.xb = xp.empty((m, n), dtype)
        self.gram = xp.empty((m, m), dtype)
        self.gram2 = xp.empty((m, m), dtype)


def _newton_schulz(upd: Any, ws: _Workspace, coefficients: tuple[float, float, float],
                   ns_steps: int, eps: float) -> tuple[Any, bool]:
    """Torch's quintic Newton-Schulz orthogonalization of ``upd``, in its dtype.

    Returns ``(x, transposed)``: the orthogonalized update in ``ws.x``, transposed when
    ``upd`` has more rows than columns (the iteration runs on the wide orientation).
    """
    xp = _backend.xp_of(upd)
    a, b, c = coefficients
    transposed = upd.shape[0] > upd.shape[1]
    x = ws.x
    x[...] = upd.T if transposed else upd
    flat = x.reshape(-1)
    norm = xp.maximum(xp.sqrt(_backend.reduce("sumsq", flat).sum()), eps)
    if _backend.is_cupy(x):  # the norm stays on the device: no host synchronization
        x /= norm.astype(x.dtype)
    else:
        _backend.launch("reduce", "scale", (), 1.0 / float(norm), flat)
    gram, gram2, xb = ws.gram, ws.gram2, ws.xb
    for _ in range(ns_steps):
        xp.matmul(x, x.T, out=gram)
        xp.matmul(gram, gram, out=gram2)
        # gram2 <- b gram + c gram2 (torch: addmm(gram, gram, gram, beta=b, alpha=c))
        _backend.launch("muon", "axpby", (), gram.reshape(-1), b, c, gram2.reshape(-1))
        xp.matmul(gram2, x, out=xb)
        # x <- a x + gram2 x (torch: addmm(x, gram2, x, beta=a))
        _backend.launch("muon", "axpby", (), xb.reshape(-1), 1.0, a, flat)
    return x, transposed


def _launch_muon(g: Any, p: Any, buf: Any, ws: _Workspace, *, gs: Any, lr: float,
                 weight_decay: float, momentum: float, nesterov: bool,
                 ns_coefficients: tuple[float, float, float], eps: float, ns_steps: int,
                 adjust_lr_fn: str | None) -> None:
    # kernels/cpu/muon.py: muon_momentum(g, gs, one_minus_mu, mu | buf, upd)
    _backend.launch("muon", "muon_momentum", (("nesterov", nesterov),), g.reshape(-1), gs,
                    1.0 - momentum, momentum, buf.reshape(-1), ws.upd.reshape(-1))
    x, transposed = _newton_schulz(ws.upd, ws, ns_coefficients, ns_steps, eps)
    # muon_apply(x, decay, step | p)
    _backend.launch("muon", "muon_apply", (("transposed", transposed),), x,
                    1.0 - lr * weight_decay, adjusted_lr(lr, adjust_lr_fn, p.shape), p)


def muon_(param: Any, grad: Any, momentum_buffer: Any, *, lr: float = 1e-3,
          weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
          ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7,
          ns_steps: int = 5, adjust_lr_fn: str | None = None, maximize: bool = False,
          grad_scale: float = 1.0) -> None:
    r"""One Muon step, in place, on a 2-D parameter (torch.optim.Muon's algorithm).

    .. math::
        B \leftarrow \operatorname{lerp}(B, G, 1-\mu);\quad
        \tilde B = \operatorname{lerp}(G, B, \mu)\ \text{(Nesterov) or}\ B;\quad
        O = \mathrm{NS}^{(a,b,c)}_k(\tilde B / \max(\|\tilde B\|_F, \epsilon));\\
        \theta \leftarrow \theta(1 - \gamma\lambda) - \gamma' O

    with :math:`k` quintic Newton-Schulz steps :math:`X \leftarrow aX + (bA + cA^2)X`,
    :math:`A = XX^\top` (on the wide orientation of the matrix), and :math:`\gamma'` the
    adjusted learning rate (:func:`adjusted_lr`). torch runs the iteration in bfloat16;
    fastgd runs it in the parameter's dtype (float32 or float64), its matmuls through BLAS
    (cuBLAS for CuPy arrays). Keller Jordan et al., 2024.

    Args:
        param: a 2-D parameter, updated in place.
        grad: its gradient.
        momentum_buffer: :math:`B` (zeros before step 1).
        lr: :math:`\gamma`.
        weight_decay: decoupled decay :math:`\lambda`.
        momentum: :math:`\mu`.
        nesterov: use the Nesterov form of the momentum.
        ns_coefficients: :math:`(a, b, c)`.
        eps: the norm's floor :math:`\epsilon`.
        ns_steps: :math:`k` < 100.
        adjust_lr_fn: None / ``"original"`` or ``"match_rms_adamw"``.
        maximize: ascend instead of descend (not in torch).
        grad_scale: factor applied to the gradient first.

    Example:
        >>> import numpy as np
        >>> w = np.zeros((4, 3)); g = np.eye(4, 3); buf = np.zeros((4, 3))
        >>> muon_(w, g, buf, lr=0.1, weight_decay=0.0, ns_steps=5)
        >>> np.abs(np.diag(w)).round(1)   # an orthogonal-ish step along the gradient
        array([0.1, 0.1, 0.1])
    """
    hp = Muon.check({"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                     "nesterov": nesterov, "ns_coefficients": ns_coefficients, "eps": eps,
                     "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn,
                     "maximize": maximize}, schedules=False)
    gs = scale_of(maximize, grad_scale)
    p = _backend.check_array(param, "param", writeable=True)
    _check_2d(p, "param")
    g = _backend.check_array(grad, "grad")
    b = _backend.check_array(momentum_buffer, "momentum_buffer", writeable=True)
    for name, a in (("grad", g), ("momentum_buffer", b)):
        if a.shape != p.shape or a.dtype != p.dtype or type(a) is not type(p):
            raise ValueError(f"{name} must match param: {a.dtype} {a.shape} vs {p.dtype} "
                             f"{p.shape}")
    g = _backend.xp_of(p).ascontiguousarray(g)
    _launch_muon(g, p, b, _Workspace(_backend.xp_of(p), p.shape, p.dtype), gs=gs,
                 **{k: v for k, v in hp.items() if k != "maximize"})


class Muon(Optimizer):
    r"""Muon (Keller Jordan et al., 2024), torch.optim.Muon's algorithm and defaults.

    For 2-D parameters (the weight matrices of hidden layers; biases, embeddings and the
    output layer belong to another optimizer such as AdamW): the momentum (Nesterov by
    default) is orthogonalized by ``ns_steps`` quintic Newton-Schulz iterations, then
    applied with decoupled weight decay and torch's learning-rate adjustment; see
    :func:`muon_` for the math. torch runs Newton-Schulz in bfloat16; fastgd runs it in
    the parameter's dtype, its matmuls through BLAS / cuBLAS and its elementwise steps as
    fused kernels. Each parameter is updated whole.

    Args:
        params: 2-D arrays (or a FlatParams / param groups of them).
        lr: :math:`\gamma`.
        weight_decay: decoupled decay :math:`\lambda`.
        momentum: :math:`\mu`.
        nesterov: the Nesterov form of the momentum.
        ns_coefficients: the iteration's :math:`(a, b, c)`.
        eps: the floor of the update's norm.
        ns_steps: Newton-Schulz steps, < 100.
        adjust_lr_fn: None / ``"original"`` (``sqrt(max(1, A/B))``) or
            ``"match_rms_adamw"`` (``0.2 sqrt(max(A, B))``).
        maximize: ascend instead of descend (a fastgd extra; torch's Muon has none).
        nonfinite: ``"propagate"``, ``"skip"`` or ``"raise"`` for NaN/inf gradients
            (see :class:`~fastgd.Optimizer`).
        average: weight averaging, :class:`~fastgd.EMA` or :class:`~fastgd.SWA`, kept
            beside the parameters (see :meth:`~fastgd.Optimizer.averaged`).

    Example:
        >>> import numpy as np, fastgd
        >>> w = np.zeros((8, 4), np.float32)
        >>> opt = fastgd.Muon([w], lr=0.02)
        >>> opt.step([np.ones_like(w)])
        True
        >>> bool(w.any())
        True
    """

    per_parameter = True

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "weight_decay": V.nonneg,
        "momentum": V.nonneg,
        "nesterov": V.flag,
        "ns_coefficients": _coefficients,
        "eps": V.epsilon,
        "ns_steps": _ns_steps,
        "adjust_lr_fn": _adjust_lr_fn,
        "maximize": V.flag,
    }

    def __init__(self, params: Any, lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None, *,
                 maximize: bool = False, nonfinite: str = "propagate",
                 average: Averaging | None = None,
                 **torch_options: Any) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay,
                                  "momentum": momentum, "nesterov": nesterov,
                                  "ns_coefficients": ns_coefficients, "eps": eps,
                                  "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn,
                                  "maximize": maximize}, nonfinite=nonfinite,
                         average=average, **torch_options)

    def _check_param(self, p: Any, name: str) -> None:
        _check_2d(p, name)

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",)

    def _workspace(self, p: Any) -> _Workspace:
        cache = self.__dict__.setdefault("_muon_ws", {})
        key = (p.shape, p.dtype.str, _backend.device_of(p))
        ws = cache.get(key)
        if ws is None:
            ws = cache[key] = _Workspace(_backend.xp_of(p), p.shape, p.dtype)
        return ws

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:
        if p.size:
            _launch_muon(g, p, state[0], self._workspace(p), gs=gs,
                         **{k: v for k, v in hp.items() if k != "maximize"})
        return {"step": ss["step"] + 1.0}
