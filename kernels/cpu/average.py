"""Weight averaging on its own (EMA / SWA of the parameters, torch.optim.swa_utils).

The update kernels carry the same stream as the variant ``average`` (one pass); this
kernel serves what they do not cover: a :class:`fastgd.WeightAverage` used on its own,
parameters that took no step this time, and rules that update each parameter whole.
"""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, averaged, rule


@rule(LIGHT_THRESHOLD)
def average():
    """avg <- avg + (p - avg) / div (div != 0), else torch's lerp(avg, p, w)."""

    def average(p, avg_w, avg_w1, avg_div, avg):
        avg_w = as_dtype_of(avg_w, avg)
        avg_w1 = as_dtype_of(avg_w1, avg)
        avg_div = as_dtype_of(avg_div, avg)
        for i in prange(avg.size):
            avg[i] = averaged(avg[i], p[i], avg_w, avg_w1, avg_div)

    return average


@rule(LIGHT_THRESHOLD)
def swap():
    """a <-> b, element by element (averaged weights in and out of the parameters)."""

    def swap(a, b):
        for i in prange(b.size):
            t = a[i]
            a[i] = b[i]
            b[i] = t

    return swap
