"""In-place axpy (the bandwidth baseline of the benchmarks) and the vector updates of L-BFGS."""

import numpy as np
from numba import prange
from numba.extending import register_jitable

from ._jit import HEAVY_THRESHOLD, LIGHT_THRESHOLD, as_dtype_of, rule


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


#: Elements a two-loop pass updates before summing them (in L1 for the sum).
TWO_LOOP_BLOCK = 2048


@register_jitable
def _update_and_dot(ds, xs, a, h, zs, fresh):
    """One chunk of a two-loop pass: d <- h (d + a x) (``fresh``: d <- h (-x), the first
    pass), then the float64 sum of z d.

    Block by block, the update of ``TWO_LOOP_BLOCK`` elements, then their sum, in two
    loops (over views of the block: loops over ``range(lo, hi)`` of the chunk ran 2.8x
    slower). A loop that both stores to ``d`` and sums over ``z`` would get a run-time
    overlap check from the vectorizer, and its two outcomes (vector or scalar loop) add
    in different orders under ``reassoc``: the sum would change in its last bits with
    where the arrays lie. A loop that only reads needs no check.
    """
    acc = 0.0
    n = ds.size
    for lo in range(0, n, TWO_LOOP_BLOCK):
        hi = min(lo + TWO_LOOP_BLOCK, n)
        db = ds[lo:hi]
        xb = xs[lo:hi]
        zb = zs[lo:hi]
        if fresh:
            for i in range(db.size):
                db[i] = h * -xb[i]
        else:
            for i in range(db.size):
                db[i] = h * (db[i] + a * xb[i])
        s = 0.0
        for i in range(db.size):
            s += np.float64(zb[i]) * np.float64(db[i])
        acc += s
    return acc


@rule(LIGHT_THRESHOLD, frozenset({"reassoc"}))
def two_loop():
    """d <- -H g: L-BFGS's two-loop recursion over its curvature pairs, in one call.

    ``Y`` and ``S`` hold the pairs' y and s as rows, ``order`` lists the history's rows
    oldest first and ``ro`` their 1 / (y.s); ``h_diag`` scales the initial inverse
    Hessian. Each pass over ``d`` makes one pair's update (the ``axpy`` kernel's, its
    coefficient in the arrays' dtype; the scaling by ``h_diag`` where it falls, a factor 1
    elsewhere, which changes no bit) and the inner product the next pair needs: four
    vectors of memory traffic a pair and loop, where a dot and an axpy take five. Each
    inner product is summed in float64 over ``parts.size`` fixed chunks (as the ``dot``
    reduction), then over the chunks in order: the same result on any number of threads.
    A pass with no inner product left sums ``d`` against itself, unused (no extra
    memory). ``reassoc`` lets the sums vectorize; the updates have no sum to reorder, and
    stores and sums are separate loops, so no sum depends on where the arrays lie
    (:func:`_update_and_dot`).
    """

    def two_loop(Y, S, order, ro, h_diag, parts, g, d):
        n = d.size
        k = parts.size
        m = order.size
        al = np.empty(m)
        one = as_dtype_of(1.0, d)
        h = as_dtype_of(h_diag, d)
        # d <- -g (scaled by h when there is no pair), and s_{m-1} . d
        z = S[order[m - 1]] if m else d
        h0 = one if m else h
        for c in prange(k):
            lo = c * n // k
            hi = (c + 1) * n // k
            parts[c] = _update_and_dot(d[lo:hi], g[lo:hi], one, h0, z[lo:hi], True)
        for j in range(m - 1, -1, -1):  # newest pair first
            total = 0.0
            for c in range(k):
                total += parts[c]
            al[j] = total * ro[j]
            a = as_dtype_of(-al[j], d)
            x = Y[order[j]]
            # the next inner product: s_{j-1} . d, or y_0 . d after the h_diag scaling
            z = S[order[j - 1]] if j else Y[order[0]]
            hj = one if j else h
            for c in prange(k):
                lo = c * n // k
                hi = (c + 1) * n // k
                parts[c] = _update_and_dot(d[lo:hi], x[lo:hi], a, hj, z[lo:hi], False)
        for j in range(m):  # oldest pair first
            total = 0.0
            for c in range(k):
                total += parts[c]
            a = as_dtype_of(al[j] - total * ro[j], d)
            x = S[order[j]]
            z = Y[order[j + 1]] if j + 1 < m else d
            for c in prange(k):
                lo = c * n // k
                hi = (c + 1) * n // k
                parts[c] = _update_and_dot(d[lo:hi], x[lo:hi], a, one, z[lo:hi], False)

    return two_loop
