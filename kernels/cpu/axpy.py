"""In-place axpy, the bandwidth baseline of the benchmarks (not an optimizer)."""

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
