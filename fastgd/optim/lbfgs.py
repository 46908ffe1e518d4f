"""L-BFGS with an optional strong-Wolfe line search (torch.optim.LBFGS's algorithm).

The parameters are one flat vector: a FlatParams's buffer as it is (the closure fills its
gradient buffer), or the concatenation of a list of arrays (the closure returns their
gradients). The curvature pairs are rows of two buffers (:class:`_History`), and the
two-loop recursion over them is one kernel call (``axpy.two_loop``); the other inner
products and vector updates are kernels over the vector (``reduce.dot``, ``axpy``,
``scaled``, ``lincomb``). Everything is written in place: the rows of pairs that leave the
history take the new ones, so a step allocates nothing of the parameters' size once the
history is full.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from fastgd import _backend
from fastgd import _validate as V
from fastgd import clip as _clip
from fastgd._threads import blas_threads
from fastgd.optim.base import Optimizer, Scalars
from fastgd.schedules import Schedule, lr_or_schedule

__all__ = ["LBFGS"]

#: LBFGS's scalar and array state (torch's names), in state_dict order
_SCALARS = ("func_evals", "n_iter", "t", "H_diag", "prev_loss")
_ARRAYS = ("d", "prev_flat_grad", "old_dirs", "old_stps", "ro")


def _pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _max_eval(name: str, value: Any) -> int | None:
    return None if value is None else _pos_int(name, value)


def _line_search(name: str, value: Any) -> str | None:
    if value not in (None, "strong_wolfe"):
        raise ValueError(f"only 'strong_wolfe' is supported ({name}={value!r}, or None)")
    return value


#: Elements up to which float64 NumPy vectors take NumPy's calls instead of fastgd's
#: kernels: an iteration makes ~4 vector operations per history pair, and on a small model
#: each kernel call's ~3 us (a binary logistic regression on the digits, 65 parameters)
#: made L-BFGS slower than SciPy's Fortran (11.4 against 7.5 ms a fit here). The results
#: are the same but for the order of a dot product's sum (float64 either way).
_SMALL = 4096


def _small(x: Any) -> bool:
    return type(x) is np.ndarray and x.size <= _SMALL and x.dtype == np.float64


def _dot(x: Any, y: Any) -> float:
    if _small(x):
        return float(np.dot(x, y))
    return float(_backend.reduce("dot", x, y).sum())


def _absmax(x: Any) -> float:
    if not x.size:
        return 0.0
    if _small(x):
        return float(np.abs(x).max())
    return float(_backend.reduce("absmax", x).max())


def _axpy(a: float, x: Any, y: Any) -> None:
    """Y <- y + a x."""
    if _small(y):
        y += a * x
    elif y.size:
        _backend.launch("axpy", "axpy", (), x, a, y)


def _scaled(a: float, x: Any, out: Any) -> None:
    """Out <- a x (``out`` may be ``x``)."""
    if _small(out):
        np.multiply(x, a, out=out)
    elif out.size:
        _backend.launch("axpy", "scaled", (), x, a, out)


def _difference(x: Any, y: Any, out: Any) -> None:
    """Out <- x - y."""
    if _small(out):
        np.subtract(x, y, out=out)
    elif out.size:
        _backend.launch("axpy", "lincomb", (), x, y, 1.0, -1.0, out)


class _History:
    """L-BFGS's curvature pairs: y and s as rows of two 2-D buffers, oldest first.

    A new pair is computed into a free row (:meth:`candidate`), then kept (:meth:`push`,
    the oldest leaving a full history) or given back (:meth:`drop`). The buffers grow by
    doubling, to at most ``history_size + 1`` rows (a candidate beside a full history),
    and keep their rows' contents as they grow.
    """

    __slots__ = ("S", "Y", "free", "ro", "rows")

    def __init__(self, like: Any) -> None:
        xp = _backend.xp_of(like)
        with _backend.on_device_of(like):
            self.Y = xp.empty((0, like.size), like.dtype)
            self.S = xp.empty((0, like.size), like.dtype)
        self.rows: list[int] = []  # the pairs' rows, oldest first
        self.ro: list[float] = []  # their 1 / (y.s)
        self.free: list[int] = []

    @classmethod
    def of(cls, like: Any, dirs: Sequence[Any], stps: Sequence[Any], ro: Sequence[float]
           ) -> _History:
        """A history holding the pairs ``(dirs[i], stps[i])`` with ``ro`` (a loaded state)."""
        h = cls(like)
        with _backend.on_device_of(like):  # CuPy: the rows on the parameters' GPU
            for y, s, r in zip(dirs, stps, ro):
                row, yr, sr = h.candidate(len(dirs) + 1)
                yr[...] = y
                sr[...] = s
                h.rows.append(row)
                h.ro.append(float(r))
        return h

    @property
    def dirs(self) -> list[Any]:
        """The y vectors, oldest first (views of the rows: torch's ``old_dirs``)."""
        return [self.Y[r] for r in self.rows]

    @property
    def stps(self) -> list[Any]:
        """The s vectors, oldest first (torch's ``old_stps``)."""
        return [self.S[r] for r in self.rows]

    def candidate(self, history: int) -> tuple[int, Any, Any]:
        """A free row and its y and s views, for a new pair (contents undefined)."""
        if not self.free:
            cap = self.Y.shape[0]
            grown = max(cap + 1, min(max(4, 2 * cap), history + 1))
            xp = _backend.xp_of(self.Y)
            with _backend.on_device_of(self.Y):
                for name in ("Y", "S"):
                    old = getattr(self, name)
                    new = xp.empty((grown, old.shape[1]), old.dtype)
                    new[:cap] = old
                    setattr(self, name, new)
            self.free = list(range(grown - 1, cap - 1, -1))
        r = self.free.pop()
        return r, self.Y[r], self.S[r]

    def push(self, row: int, ys: float, history: int) -> None:
        """Keep the candidate pair in ``row`` (``ys``: its y.s).

        The oldest pair leaves a full history (as torch's, one pair at a time).
        """
        if len(self.rows) == history:
            self.free.append(self.rows.pop(0))
            self.ro.pop(0)
        self.rows.append(row)
        self.ro.append(1.0 / ys)

    def drop(self, row: int) -> None:
        """Give back a candidate row whose pair was not kept."""
        self.free.append(row)

    def clear(self) -> None:
        """Forget every pair (the rows stay, free)."""
        self.free.extend(self.rows)
        self.rows.clear()
        self.ro.clear()

    def direction(self, h_diag: float, g: Any, d: Any) -> None:
        """D <- -H g by the two-loop recursion over the pairs (one kernel call)."""
        n = d.size
        parallel = type(d) is np.ndarray and _backend.runs_parallel(n, "axpy", "two_loop")
        parts = np.empty(_backend.REDUCE_CHUNKS if parallel else 1)
        _backend.launch("axpy", "two_loop", (), self.Y, self.S,
                        np.array(self.rows, dtype=np.int64), np.array(self.ro), float(h_diag),
                        parts, g, d)


def _cubic_min(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
               bounds: tuple[float, float] | None = None) -> float:
    """The minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), within bounds.

    The bounds default to the two points; without a real minimizer, their midpoint.
    """
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if disc < 0:
        return (lo + hi) / 2.0
    d2 = math.sqrt(disc)
    if x1 <= x2:
        xm = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        xm = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(xm, lo), hi)


def _strong_wolfe(evaluate: Callable[[float], tuple[float, Any]], t: float, d: Any, f: float,
                  g: Any, gtd: float, max_ls: int, c1: float = 1e-4, c2: float = 0.9,
                  tolerance_change: float = 1e-9) -> tuple[float, Any, float, int]:
    """A step length along ``d`` meeting the strong Wolfe conditions.

    Bracketing, then zooming with cubic interpolation (Nocedal & Wright, Algorithms 3.5
    and 3.6, in the form torch.optim.LBFGS takes from minFunc). ``evaluate(t)`` returns the
    loss and a fresh gradient at ``x + t d``.

    Returns:
        ``(loss, gradient, t, evaluations)`` at the step chosen.
    """
    d_norm = _absmax(d)
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = _dot(g_new, d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    it = 0
    bracket: list[float] = []
    while it < max_ls:  # find an interval that holds a point meeting the conditions
        if f_new > f + c1 * t * gtd or (it > 1 and f_new >= f_prev):
            bracket, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bf, bg, bgtd = [t], [f_new], [g_new], [gtd_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bf, bg, bgtd = [t_prev, t], [f_prev, f_new], [g_prev, g_new], \
                [gtd_prev, gtd_new]
            break
        lo, hi = t + 0.01 * (t - t_prev), t * 10
        t_next = _cubic_min(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(lo, hi))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = t_next
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = _dot(g_new, d)
        it += 1
    if it == max_ls:
        bracket, bf, bg = [0.0, t], [f, f_new], [g, g_new]
        bgtd = [gtd, gtd_new]
    insufficient = False
    low, high = (0, 1) if bf[0] <= bf[-1] else (1, 0)
    while not done and it < max_ls:  # zoom into the interval
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_min(bracket[0], bf[0], bgtd[0], bracket[1], bf[1], bgtd[1])
        width = max(bracket) - min(bracket)
        eps = 0.1 * width
        if min(max(bracket) - t, t - min(bracket)) < eps:
            # too close to an end: move away from it, unless progress was good last time
            if insufficient or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) \
                    else min(bracket) + eps
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = _dot(g_new, d)
        it += 1
        if f_new > f + c1 * t * gtd or f_new >= bf[low]:
            bracket[high], bf[high], bg[high], bgtd[high] = t, f_new, g_new, gtd_new
            low, high = (0, 1) if bf[0] <= bf[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bf[high], bg[high], bgtd[high] = \
                    bracket[low], bf[low], bg[low], bgtd[low]
            bracket[low], bf[low], bg[low], bgtd[low] = t, f_new, g_new, gtd_new
    return bf[low], bg[low], bracket[low], evals


class LBFGS(Optimizer):
    r"""L-BFGS (Liu & Nocedal, 1989), torch.optim.LBFGS's algorithm, names and defaults.

    ``opt.step(closure)`` runs up to ``max_iter`` iterations of

    .. math::
        d = -H g \ \text{(two-loop recursion over the last history\_size pairs}\
        s = \Delta\theta,\ y = \Delta g,\ H_0 = \tfrac{s^\top y}{y^\top y}I);\quad
        \theta \leftarrow \theta + t d

    with ``t = lr`` (the first iteration: ``min(1, 1/|g|_1) lr``) or the step a strong-Wolfe
    line search finds (``line_search_fn="strong_wolfe"``); it stops at ``tolerance_grad``
    (max |g|), ``tolerance_change`` (of the loss and of the step), ``max_iter`` or
    ``max_eval`` evaluations, and keeps its history between calls. The parameters are one
    vector: a FlatParams's buffer, or a list of arrays of one dtype concatenated (as
    torch does). One param group only, as in torch.

    The closure evaluates the loss at the current parameters: for a FlatParams it writes
    the gradient into ``flat.grads`` and returns the loss; for a list of arrays it returns
    ``(loss, grads)``. ``step`` returns the loss of the first evaluation.

    Args:
        params: a FlatParams, or arrays of one dtype.
        lr: the step length (or its first guess, with the line search).
        max_iter: iterations per ``step``.
        max_eval: closure evaluations per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when max |g| is at most this.
        tolerance_change: stop when the loss or the step changes less than this.
        history_size: the (s, y) pairs kept.
        line_search_fn: None or ``"strong_wolfe"``.
        nonfinite: what a non-finite first gradient does: ``"propagate"`` (go on, as
            torch), ``"skip"`` (return its loss, change nothing) or ``"raise"``.
        blas_threads: BLAS threads during a step, the closure's calls included (None
            leaves BLAS as it is). 1 by default: BLAS's spinning worker threads and the
            parallel vector kernels contend for the cores otherwise (a step whose closure
            called NumPy's BLAS took 2x as long here).

    Example:
        >>> import numpy as np, fastgd
        >>> flat = fastgd.FlatParams([(2,)], dtype=np.float64)
        >>> (x,), (gx,) = flat.params, flat.grads
        >>> def closure():                 # f(x) = |x - (1, 2)|^2
        ...     gx[...] = 2 * (x - [1.0, 2.0])
        ...     return float(((x - [1.0, 2.0]) ** 2).sum())
        >>> opt = fastgd.LBFGS(flat, line_search_fn="strong_wolfe")
        >>> opt.step(closure)
        5.0
        >>> x.round(6)
        array([1., 2.])
    """

    can_average: ClassVar[bool] = False

    #: name -> checker (fastgd._validate); Optimizer.check applies them
    hyperparameters: ClassVar[dict[str, Any]] = {
        "lr": lr_or_schedule,
        "max_iter": _pos_int,
        "max_eval": _max_eval,
        "tolerance_grad": V.nonneg,
        "tolerance_change": V.nonneg,
        "history_size": _pos_int,
        "line_search_fn": _line_search,
    }

    def __init__(self, params: Any, lr: float = 1, max_iter: int = 20,
                 max_eval: int | None = None, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None, *, nonfinite: str = "propagate",
                 blas_threads: int | None = 1, **torch_options: Any) -> None:
        if max_eval is None and isinstance(max_iter, int) and not isinstance(max_iter, bool):
            max_eval = max_iter * 5 // 4
        super().__init__(params, {"lr": lr, "max_iter": max_iter, "max_eval": max_eval,
                                  "tolerance_grad": tolerance_grad,
                                  "tolerance_change": tolerance_change,
                                  "history_size": history_size,
                                  "line_search_fn": line_search_fn},
                         nonfinite=nonfinite, **torch_options)
        if blas_threads is not None:
            blas_threads = _pos_int("blas_threads", blas_threads)
        #: BLAS threads during a step, the closure's calls included (None: unchanged).
        self.blas_threads = blas_threads
        self._lbfgs: dict[str, Any] = {}
        # recycled vectors of the parameters' size: curvature pairs that left the history,
        # the line search's copy of the parameters
        self._spare: list[Any] = []
        self._x0: list[Any] | None = None

    def _relayout(self, groups: list[Any]) -> None:
        if len(groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super()._relayout(groups)
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) > 1:
            raise TypeError(f"LBFGS needs parameters of one dtype, got {sorted(map(str, dtypes))}")

    def _state_names(self, hp: Mapping[str, Any]) -> tuple[str, ...]:
        return ()

    def _update(self, hp, ss: Scalars, gs, g, p, state) -> Scalars:  # pragma: no cover
        raise TypeError("LBFGS steps with a closure: opt.step(closure)")

    # -- the flat vector -----------------------------------------------------------------

    def _flat_params(self) -> Any:
        """The parameters as one 1-D array: a view when they are one span, else None."""
        segs = self._segments[0]
        if len(segs) == 1 and len(segs[0].index) == len(self._params):
            return segs[0].span
        return None

    def _gather(self, grads: Sequence[Any], out: Any = None) -> Any:
        """The gradients as one 1-D vector, in parameter order: a copy, into ``out`` if given."""
        xp = _backend.xp_of(self._params[0])
        if out is None:
            if len(grads) == 1:
                return xp.array(grads[0].reshape(-1), copy=True)
            return xp.concatenate([g.reshape(-1) for g in grads])
        if type(out) is np.ndarray:  # one call: the arrays flattened into out in turn
            return np.concatenate(grads, axis=None, out=out)
        o = 0
        for g in grads:
            xp.copyto(out[o : o + g.size], g.reshape(-1))
            o += g.size
        return out

    def _vector(self) -> Any:
        """A vector of the parameters' size: a recycled one if any (contents undefined)."""
        p0 = self._params[0]
        n = sum(p.size for p in self._params)
        while self._spare:
            v = self._spare.pop()
            if v.shape == (n,) and v.dtype == p0.dtype and type(v) is type(p0):
                return v
        return _backend.xp_of(p0).empty(n, p0.dtype)

    def _add(self, t: float, d: Any) -> None:
        """Theta <- theta + t d."""
        span = self._flat_params()
        if span is not None:
            _axpy(t, d, span)
            return
        if self._multi_array(d):  # one launch, d read in the arrays' pieces
            params, offsets = self._param_multi()
            pieces = _backend.MultiSpan(
                [d], params.layout, _backend.address(d) + offsets * d.itemsize)
            _backend.launch("axpy", "axpy", (), pieces, t, params)
            return
        o = 0
        for p in self._params:
            _axpy(t, d[o : o + p.size], p.reshape(-1))
            o += p.size

    def _multi_array(self, d: Any) -> bool:
        """Whether an update is one multi-array launch: over separate NumPy arrays.

        (On the GPU each array is updated by a launch of its own.)
        """
        return type(d) is np.ndarray and len(self._params) > 1

    def _param_multi(self) -> tuple[Any, np.ndarray]:
        """The parameters as one :class:`fastgd._backend.MultiSpan`, and their offsets.

        The offsets are where each parameter starts in the flat vector; both are kept per
        layout.
        """
        kept = self._multi_cache.get("lbfgs")
        if kept is None or kept[0] != self._layout_version:
            sizes = [p.size for p in self._params]
            kept = self._multi_cache["lbfgs"] = (
                self._layout_version, _backend.multi_span(self._params),
                np.cumsum([0, *sizes[:-1]], dtype=np.int64))
        return kept[1], kept[2]

    def _copy_params(self) -> list[Any]:
        """The parameters' values, in buffers kept from one line search to the next."""
        x0 = self._x0
        if x0 is None or len(x0) != len(self._params) or any(
                a.shape != p.shape or a.dtype != p.dtype for a, p in zip(x0, self._params)):
            x0 = self._x0 = [p.copy() for p in self._params]
            return x0
        for a, p in zip(x0, self._params):
            a[...] = p
        return x0

    def _set_params(self, saved: Sequence[Any]) -> None:
        for p, s in zip(self._params, saved):
            p[...] = s

    def _evaluate(self, closure: Callable[[], Any], out: Any = None) -> tuple[float, Any]:
        """Call the closure once; return its loss and its flat gradient (a copy, or ``out``)."""
        result = closure()
        if self._attached_all is not None and not isinstance(result, tuple):
            loss, grads = result, self._attached_all
        else:
            if not isinstance(result, tuple) or len(result) != 2:
                raise TypeError("the closure must return (loss, grads) for a list of arrays, "
                                "or the loss alone when the parameters are a FlatParams "
                                f"(it fills flat.grads); got {type(result).__name__}")
            loss, grads = result
            grads = self._check_grads(grads)
            if any(g is None for g in grads):
                raise ValueError("LBFGS needs a gradient for every parameter")
        return float(loss), self._gather(grads, out)

    # -- the step --------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Run the iterations of one L-BFGS step; return the first loss the closure gave.

        Args:
            closure: evaluates the loss (see the class docstring).
            **kwargs: refused (``grads``, ``clip_norm`` and the other options of the
                first-order optimizers' ``step`` do not apply).

        Raises:
            TypeError: no closure, or a closure returning the wrong thing.
            fastgd.clip.NonFiniteGradientError: a non-finite first gradient with
                ``nonfinite="raise"`` (nothing changed).
        """
        if closure is None or not callable(closure):
            raise TypeError("LBFGS.step needs a closure: opt.step(closure)")
        if kwargs:
            raise TypeError(f"LBFGS.step takes only a closure, got {sorted(kwargs)}")
        with self._lock, blas_threads(self.blas_threads), self._on_device():
            self._sync()
            return self._lbfgs_step(closure)

    def _lbfgs_step(self, closure: Callable[[], Any]) -> Any:
        hp = self._scheduled(0)
        lr = hp["lr"]
        max_iter, max_eval = hp["max_iter"], hp["max_eval"] or hp["max_iter"] * 5 // 4
        tol_grad, tol_change = hp["tolerance_grad"], hp["tolerance_change"]
        history = hp["history_size"]
        st = self._lbfgs
        loss, g = self._evaluate(closure, out=self._vector())
        first_loss = loss
        if self.nonfinite != "propagate" and not _clip.all_finite([g]):
            if self.nonfinite == "raise":
                raise _clip.NonFiniteGradientError(
                    "non-finite gradient at the first evaluation (nonfinite='raise'); nothing "
                    "was updated")
            self.steps_skipped += 1
            return first_loss
        st.setdefault("func_evals", 0)
        st.setdefault("n_iter", 0)
        st["func_evals"] += 1
        evals = 1
        if _absmax(g) <= tol_grad:
            self.steps_applied += 1
            return first_loss
        d, t = st.get("d"), st.get("t")
        hist: _History | None = st.get("history")
        h_diag, prev_g, prev_loss = st.get("H_diag"), st.get("prev_flat_grad"), None
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            st["n_iter"] += 1
            # every vector is written in place by kernels: no temporaries (fresh arrays
            # of the parameters' size cost page faults, and the allocator's time)
            if d is None or d.shape != g.shape:
                d = self._vector()
            if st["n_iter"] == 1:
                _scaled(-1.0, g, d)
                if hist is None or hist.Y.shape[1] != g.size or hist.Y.dtype != g.dtype:
                    hist = _History(g)
                hist.clear()
                h_diag = 1.0
            else:
                row, y, s = hist.candidate(history)
                _difference(g, prev_g, y)
                _scaled(t, d, s)
                ys = _dot(y, s)
                if ys > 1e-10:  # a curvature pair that keeps H positive definite
                    hist.push(row, ys, history)
                    h_diag = ys / _dot(y, y)
                else:
                    hist.drop(row)
                hist.direction(h_diag, g, d)  # d = -H g, the two-loop recursion
            if prev_g is None or prev_g.shape != g.shape:
                prev_g = _backend.xp_of(g).empty_like(g)
            prev_g[...] = g
            prev_loss = loss
            if st["n_iter"] == 1:
                t = min(1.0, 1.0 / float(_backend.reduce("sumabs", g).sum())) * lr
            else:
                t = lr
            gtd = _dot(g, d)
            if gtd > -tol_change:  # not a descent direction
                break
            ls_evals = 0
            if hp["line_search_fn"] == "strong_wolfe":
                x0 = self._copy_params()

                def evaluate(step: float, x0: list[Any] = x0, d: Any = d) -> tuple[float, Any]:
                    self._add(step, d)
                    out = self._evaluate(closure)
                    self._set_params(x0)
                    return out

                loss, g, t, ls_evals = _strong_wolfe(evaluate, t, d, loss, g, gtd,
                                                     max_ls=max_eval - evals)
                self._add(t, d)
                optimal = _absmax(g) <= tol_grad
            else:
                self._add(t, d)
                optimal = False
                if n_iter != max_iter:
                    # prev_g holds g's values now: the new gradient may take its buffer
                    loss, g = self._evaluate(closure, out=g)
                    optimal = _absmax(g) <= tol_grad
                    ls_evals = 1
            evals += ls_evals
            st["func_evals"] += ls_evals
            if n_iter == max_iter or evals >= max_eval or optimal:
                break
            if _absmax(d) * abs(t) <= tol_change:
                break
            if abs(loss - prev_loss) < tol_change:
                break
        st.update(d=d, t=t, history=hist, H_diag=h_diag, prev_flat_grad=prev_g,
                  prev_loss=prev_loss)
        if g is not d and g is not prev_g:
            self._spare.append(g)  # the last gradient: the next step's first
        self.steps_applied += 1
        return first_loss

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """The history, under the first parameter's index as torch keeps it."""
        st = self._lbfgs
        if "d" not in st:
            return {}
        out = {k: v for k, v in st.items() if k != "history"}
        hist = st["history"]
        out.update(old_dirs=hist.dirs, old_stps=hist.stps, ro=list(hist.ro))
        return {0: out}

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the history as arrays (``old_dirs`` / ``old_stps`` stacked)."""
        with self._lock, self._on_device():
            self._sync()
            sd = super().state_dict()
            st = self.state.get(0, {})
            if "d" in st:
                xp = _backend.xp_of(st["d"])
                n = st["d"].size
                entry: dict[str, Any] = {
                    "func_evals": float(st["func_evals"]), "n_iter": float(st["n_iter"]),
                    "t": float(st["t"]), "H_diag": float(st["H_diag"]),
                    "prev_loss": float(st["prev_loss"]), "d": st["d"].copy(),
                    "prev_flat_grad": st["prev_flat_grad"].copy(),
                    "old_dirs": (xp.stack(st["old_dirs"]) if st["old_dirs"]
                                 else xp.zeros((0, n), st["d"].dtype)),
                    "old_stps": (xp.stack(st["old_stps"]) if st["old_stps"]
                                 else xp.zeros((0, n), st["d"].dtype)),
                    "ro": xp.asarray(st["ro"], dtype=np.float64).reshape(-1),
                }
                sd["state"] = {0: entry}
            return sd

    def _prepare_load(self, state_dict: Mapping[str, Any]) -> Callable[[], None]:
        saved = state_dict.get("state") if isinstance(state_dict, Mapping) else None
        if not isinstance(saved, Mapping) or set(saved) - {0, "0"}:
            raise ValueError("an LBFGS state dict holds state for parameter 0 only")
        entry = saved.get(0, saved.get("0"))
        base = super()._prepare_load({**state_dict, "state": {}})
        n = sum(p.size for p in self._params)
        like = self._params[0]
        loaded: dict[str, Any] = {}
        if entry is not None:
            if not isinstance(entry, Mapping) or set(entry) != {*_SCALARS, *_ARRAYS}:
                raise ValueError(f"LBFGS state must have the keys {sorted({*_SCALARS, *_ARRAYS})}")
            for k in _SCALARS:
                loaded[k] = V.real(f"state[0][{k!r}]", entry[k])
            arrays = {}
            for k in _ARRAYS:
                a = entry[k]
                a = a.get() if _backend.is_cupy(a) else a
                if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                    raise TypeError(f"state[0][{k!r}] must be a float array")
                arrays[k] = a
            m = arrays["ro"].shape[0] if arrays["ro"].ndim == 1 else -1
            want = {"d": (n,), "prev_flat_grad": (n,), "old_dirs": (m, n), "old_stps": (m, n),
                    "ro": (m,)}
            for k, shape in want.items():
                if arrays[k].shape != shape:
                    raise ValueError(f"state[0][{k!r}] has shape {arrays[k].shape}, these "
                                     f"parameters need {shape}")
            if m > self._hyper(0)["history_size"]:
                raise ValueError(f"the state holds {m} pairs, more than history_size")

            def vec(a: Any) -> Any:
                return _backend.to_module_of(np.asarray(a, like.dtype), like)

            d = vec(arrays["d"])
            loaded.update(d=d, prev_flat_grad=vec(arrays["prev_flat_grad"]),
                          history=_History.of(d, [vec(r) for r in arrays["old_dirs"]],
                                              [vec(r) for r in arrays["old_stps"]],
                                              [float(r) for r in arrays["ro"]]))
            loaded["func_evals"] = int(loaded["func_evals"])
            loaded["n_iter"] = int(loaded["n_iter"])

        def apply() -> None:
            base()
            self._lbfgs = loaded

        return apply

    def warmup(self, *, norm_type: float | str | None = None) -> LBFGS:
        """Compile the kernels a step runs (dot, axpy, the norms), on scratch vectors."""
        del norm_type
        like = self._params[0]
        x = _backend.to_module_of(np.ones(2, like.dtype), like)
        for mode in (_backend.serial_kernels(), _backend.all_parallel_kernels()):
            with mode:
                _dot(x, x)
                _absmax(x)
                _backend.reduce("sumabs", x)
                _axpy(0.0, x, x.copy())
                _scaled(1.0, x, x.copy())
                _difference(x, x, x.copy())
                hist = _History(x)
                row, y, s = hist.candidate(1)
                y[...], s[...] = x, x
                hist.push(row, 2.0, 1)
                hist.direction(0.5, x, x.copy())
        return self

    def _scheduled(self, gi: int) -> dict[str, Any]:
        hp = super()._scheduled(gi)
        if isinstance(hp["lr"], Schedule):  # pragma: no cover - resolved by the base
            raise TypeError("lr schedule was not evaluated")
        return hp
