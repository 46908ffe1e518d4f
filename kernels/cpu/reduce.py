"""Reductions over one gradient array (norms, finiteness) and the in-place clip kernels.

A reduction writes one float64 partial result per chunk into ``out``; the caller combines
the partials in a fixed order. The chunking depends only on the array's length and
``out.size`` (never on the thread count), so a result is the same bit for bit however many
threads run it. Sums use the ``reassoc`` fast-math flag alone, so they vectorize and still
propagate NaN and inf.
"""

import numpy as np
from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, rule

_REASSOC = frozenset({"reassoc"})


@rule(LIGHT_THRESHOLD, _REASSOC)
def sumsq():
    """out[c] = sum of x^2 over chunk c, in float64."""

    def sumsq(x, out):
        n = x.size
        k = out.size
        for c in prange(k):
            acc = 0.0
            for i in range(c * n // k, (c + 1) * n // k):
                v = np.float64(x[i])
                acc += v * v
            out[c] = acc

    return sumsq


@rule(LIGHT_THRESHOLD, _REASSOC)
def sumpow():
    """out[c] = sum of |x|^p over chunk c, in float64."""

    def sumpow(x, p, out):
        n = x.size
        k = out.size
        for c in prange(k):
            acc = 0.0
            for i in range(c * n // k, (c + 1) * n // k):
                acc += abs(np.float64(x[i])) ** p
            out[c] = acc

    return sumpow


@rule(LIGHT_THRESHOLD)
def absmax():
    """out[c] = max |x| over chunk c (NaN if the chunk holds a NaN)."""

    def absmax(x, out):
        n = x.size
        k = out.size
        for c in prange(k):
            acc = 0.0
            for i in range(c * n // k, (c + 1) * n // k):
                a = abs(np.float64(x[i]))
                if a > acc or a != a:
                    acc = a
            out[c] = acc

    return absmax


@rule(LIGHT_THRESHOLD, _REASSOC)
def nonfinite():
    """out[c] = sum of x * 0 over chunk c: 0 if every element is finite, else NaN."""

    def nonfinite(x, out):
        n = x.size
        k = out.size
        for c in prange(k):
            acc = 0.0
            for i in range(c * n // k, (c + 1) * n // k):
                acc += np.float64(x[i]) * 0.0
            out[c] = acc

    return nonfinite


@rule(LIGHT_THRESHOLD)
def scale():
    """x <- a x."""

    def scale(a, x):
        a = as_dtype_of(a, x)
        for i in prange(x.size):
            x[i] = x[i] * a

    return scale


@rule(LIGHT_THRESHOLD)
def clamp():
    """x <- min(max(x, lo), hi); NaN stays NaN."""

    def clamp(lo, hi, x):
        lo = as_dtype_of(lo, x)
        hi = as_dtype_of(hi, x)
        for i in prange(x.size):
            v = x[i]
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            x[i] = v

    return clamp
