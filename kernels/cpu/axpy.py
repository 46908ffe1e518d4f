"""In-place axpy (the bandwidth baseline of the benchmarks) and the vector updates of L-BFGS."""

from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, rule


@rule(4 * HEAVY_THRESHOLD)  # light as SGD, and only a baseline: crosses at ~64k
def axpy():
    """y <- y + a x: 12 bytes per float32 element, read-modify-write like the optimizers."""

    def axpy(x, a, y):
        a = as_dtype_of(a, y)
        for i in prange(y.size):
            y[i] = y[i] + a * x[i]

    return axpy


@rule(4 * HEAVY_THRESHOLD)
def scaled():
    """out <- a x (``out`` may be ``x``): L-BFGS's directions without a temporary."""

    def scaled(x, a, out):
        a = as_dtype_of(a, out)
        for i in prange(out.size):
            out[i] = a * x[i]

    return scaled


@rule(4 * HEAVY_THRESHOLD)
def lincomb():
    """out <- a x + b y (``out`` may be ``x`` or ``y``): L-BFGS's gradient differences."""

    def lincomb(x, y, a, b, out):
        a = as_dtype_of(a, out)
        b = as_dtype_of(b, out)
        for i in prange(out.size):
            out[i] = a * x[i] + b * y[i]

    return lincomb
