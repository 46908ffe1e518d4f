"""Reductions and clip kernels: CUDA twin of kernels/cpu/reduce.py.

A reduction returns its result as a 1-element float64 device array (one "partial", the
contract of the CPU twin), so callers can combine results on the device without a sync.
"""

import cupy as cp

from ._elementwise import rule

_DOUBLE_NAN_MAX = "(a != a) ? a : ((b != b) ? b : (a > b ? a : b))"


class _Reduction:
    """A memoized ``ReductionKernel`` taking the CPU twin's arguments minus ``out``."""

    def __init__(self, name: str, ins: str, map_expr: str, reduce_expr: str) -> None:
        self.__name__ = name
        self._spec = (ins, "float64 out", map_expr, reduce_expr, "out = a", "0", f"fastgd_{name}")
        self._kernel = None
        self.arg_names = [*(a.split()[-1] for a in ins.split(",")), "out"]

    @property
    def kernel(self):
        """The ``ReductionKernel`` (built on first use, compiled on first launch)."""
        if self._kernel is None:
            self._kernel = cp.ReductionKernel(*self._spec)
        return self._kernel

    def bound(self, x, *scalars):
        """``(kernel, args)`` of one call (what runs on the device, for the host checks)."""
        return self.kernel, (x, *scalars)

    def __call__(self, x, *scalars):
        kernel, args = self.bound(x, *scalars)
        return kernel(*args).reshape(1)


class _PowerSum(_Reduction):
    """sum |x|^p with ``p`` compiled into the kernel (one variant per ``p``).

    CuPy takes its CUB reduction path only for a kernel of a single input; a run-time
    ``p`` as a second input sent every norm but 1, 2 and inf to one thread block.
    """

    def __init__(self) -> None:
        super().__init__("sumpow", "T x, float64 p", "", "a + b")
        self._by_p: dict[float, object] = {}

    def bound(self, x, p):
        p = float(p)
        k = self._by_p.get(p)
        if k is None:
            term = "fabs((double)x)" if p == 1.0 else f"pow(fabs((double)x), {p!r})"
            tag = repr(p).replace(".", "_").replace("-", "m").replace("+", "")
            k = self._by_p[p] = cp.ReductionKernel("T x", "float64 out", term, "a + b",
                                                   "out = a", "0", f"fastgd_sumpow_{tag}")
        return k, (x,)


sumsq = _Reduction("sumsq", "T x", "(double)x * (double)x", "a + b")
sumpow = _PowerSum()
sumabs = _Reduction("sumabs", "T x", "fabs((double)x)", "a + b")


class _RowsReduction(_Reduction):
    """A reduction of several inputs, spread over many thread blocks.

    CuPy reduces a whole array to one value on a single thread block (its simple
    reduction gives each block a group of outputs) unless it takes its CUB path, which
    needs a single input: a dot product of 1e6 elements ran on one block of 512 threads,
    one multiprocessor of the GPU. From :attr:`MIN_SIZE` elements the arrays are reduced
    as :attr:`ROWS` rows instead (one block each, ``axis=1``), the tail beyond the last
    full row on its own, and the row sums by ``cupy.sum`` (one input: CUB): the same sum
    in another order, a fixed one (the result does not depend on the GPU).
    """

    ROWS = 1024
    MIN_SIZE = 1 << 17

    def __call__(self, x, *arrays):
        if x.size < self.MIN_SIZE:
            return super().__call__(x, *arrays)
        m = x.size // self.ROWS
        head = self.ROWS * m
        parts = self._rows(*(a[:head].reshape(self.ROWS, m) for a in (x, *arrays)))
        total = cp.sum(parts)
        if head < x.size:
            total = total + super().__call__(x[head:], *(a[head:] for a in arrays))[0]
        return total.reshape(1)

    def _rows(self, *arrays2d):
        """The float64 sums of the rows of 2-D arrays (one thread block per row)."""
        return self.kernel(*arrays2d, axis=1)


#: x . y in float64 (L-BFGS's inner products), as the CPU twin accumulates it
dot = _RowsReduction("dot", "T x, T y", "(double)x * (double)y", "a + b")
absmax = _Reduction("absmax", "T x", "fabs((double)x)", _DOUBLE_NAN_MAX)
nonfinite = _Reduction("nonfinite", "T x", "(double)x * 0.0", "a + b")


@rule("a | x")
def scale():
    """x <- a x."""
    return "x = x * a;"


@rule("lo hi | x")
def clamp():
    """x <- min(max(x, lo), hi); NaN stays NaN."""
    return """
    T v = x;
    if (v < lo) v = lo;
    else if (v > hi) v = hi;
    x = v;
    """


clip_coef = cp.ElementwiseKernel(
    "float64 total, float64 max_norm, float64 power, float64 grad_scale", "T gs",
    """
    double norm = (power == 0) ? total : pow(total, 1.0 / power);
    norm = norm * fabs(grad_scale);
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) coef = 1.0;
    gs = (T)(grad_scale * coef);
    """,
    "fastgd_clip_coef",
)
"""The clipping scale on the device: ``gs = grad_scale * min(1, max_norm / (norm + 1e-6))``
with ``norm = total ** (1/power)`` (``power = 0``: ``total`` is already the norm)."""
