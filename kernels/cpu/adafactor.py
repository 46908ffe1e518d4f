"""Adafactor (torch.optim.Adafactor's update): factored second moments and the update.

A parameter of two or more dimensions is viewed as ``(B, R, C)`` (its leading dimensions
as one batch), its second moment kept as row statistics ``(B, R)`` and column statistics
``(B, C)``; a vector keeps a full ``variance``. The per-parameter scalars (the norms of the
parameter and of the update) are reductions here; the host folds them into the final
step size. ``lerp`` is torch's: ``a + w (b - a)`` for ``|w| < 0.5``, else
``b - (b - a)(1 - w)``.
"""

import numpy as np
from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, rule


@rule(LIGHT_THRESHOLD)
def sq_sums():
    """rows[b, r] = sum_c (gs g)^2, cols[b, c] = sum_r (gs g)^2, in float64."""

    def sq_sums(g, gs, rows, cols):
        gs = np.float64(gs)
        nb, nr, nc = g.shape
        for b in prange(nb):
            cb = cols[b]
            for c in range(nc):
                cb[c] = 0.0
            for r in range(nr):
                gr = g[b, r]
                acc = 0.0
                for c in range(nc):
                    v = gs * np.float64(gr[c])
                    v = v * v
                    acc += v
                    cb[c] += v
                rows[b, r] = acc

    return sq_sums


@rule(LIGHT_THRESHOLD)
def lerp_means():
    """stat <- lerp(stat, sums * inv_n, w) (a mean of squares into a running statistic)."""

    def lerp_means(sums, inv_n, w, stat):
        w = as_dtype_of(w, stat)
        one = as_dtype_of(1.0, stat)
        half = as_dtype_of(0.5, stat)
        s = stat.reshape(-1)
        q = sums.reshape(-1)
        for i in prange(s.size):
            m = as_dtype_of(q[i] * inv_n, stat)
            a = s[i]
            s[i] = a + w * (m - a) if abs(w) < half else m - (m - a) * (one - w)

    return lerp_means


@rule(LIGHT_THRESHOLD)
def vector_stats():
    """variance <- lerp(variance, (gs g)^2, w)."""

    def vector_stats(g, gs, w, variance):
        gs = as_dtype_of(gs, variance)
        w = as_dtype_of(w, variance)
        one = as_dtype_of(1.0, variance)
        half = as_dtype_of(0.5, variance)
        for i in prange(variance.size):
            gi = gs * g[i]
            m = gi * gi
            a = variance[i]
            variance[i] = a + w * (m - a) if abs(w) < half else m - (m - a) * (one - w)

    return vector_stats


@rule(LIGHT_THRESHOLD, frozenset({"reassoc"}))
def factored_update_sq():
    """out[0] = sum of u^2, u = (gs g) / sqrt(max(row c / rm, eps1^2)), in float64.

    One partial per row, added in row order (the same result for any thread count); each
    row's sum vectorizes under ``reassoc`` alone (see ``vector_update_sq``).
    """

    def factored_update_sq(g, gs, row_var, col_var, rm, eps1sq, out):
        gs = as_dtype_of(gs, row_var)
        eps1sq = as_dtype_of(eps1sq, row_var)
        one = as_dtype_of(1.0, row_var)
        nb, nr, nc = g.shape
        part = np.zeros(nb * nr)
        for br in prange(nb * nr):
            b = br // nr
            r = br - b * nr
            rb = rm[b]
            cb = col_var[b]
            rv = row_var[b, r]
            gr = g[b, r]
            acc = 0.0
            for c in range(nc):
                v = rv * cb[c] / rb
                if v < eps1sq:
                    v = eps1sq
                u = one / np.sqrt(v) * (gs * gr[c])
                acc += np.float64(u) * np.float64(u)
            part[br] = acc
        total = 0.0
        for br in range(nb * nr):
            total += part[br]
        out[0] = total

    return factored_update_sq


@rule(LIGHT_THRESHOLD)
def factored_apply():
    """theta <- theta decay - step u, u as in factored_update_sq."""

    def factored_apply(g, gs, row_var, col_var, rm, eps1sq, decay, step, p):
        gs = as_dtype_of(gs, p)
        eps1sq = as_dtype_of(eps1sq, p)
        decay = as_dtype_of(decay, p)
        step = as_dtype_of(step, p)
        one = as_dtype_of(1.0, p)
        nb, nr, nc = g.shape
        for b in prange(nb):
            rb = rm[b]
            cb = col_var[b]
            for r in range(nr):
                rv = row_var[b, r]
                gr = g[b, r]
                pr = p[b, r]
                for c in range(nc):
                    v = rv * cb[c] / rb
                    if v < eps1sq:
                        v = eps1sq
                    u = one / np.sqrt(v) * (gs * gr[c])
                    pr[c] = pr[c] * decay + (-step) * u

    return factored_apply


@rule(LIGHT_THRESHOLD, frozenset({"reassoc"}))
def vector_update_sq():
    """out[0] = sum of u^2, u = (gs g) / sqrt(max(variance, eps1^2)), in float64.

    Summed as 16 chunk partials added in order (as the reductions of ``reduce.py``: the
    same result for any thread count, serial or parallel build); ``reassoc`` alone lets
    each chunk's sum vectorize (without it the float64 additions run one after another,
    4 ms per 1e6 elements here instead of 0.4).
    """

    def vector_update_sq(g, gs, variance, eps1sq, out):
        gs = as_dtype_of(gs, variance)
        eps1sq = as_dtype_of(eps1sq, variance)
        one = as_dtype_of(1.0, variance)
        n = variance.size
        k = 16
        part = np.zeros(k)
        for c in prange(k):
            vs = variance[c * n // k : (c + 1) * n // k]
            gc = g[c * n // k : (c + 1) * n // k]
            acc = 0.0
            for i in range(vs.size):
                v = vs[i]
                if v < eps1sq:
                    v = eps1sq
                u = one / np.sqrt(v) * (gs * gc[i])
                acc += np.float64(u) * np.float64(u)
            part[c] = acc
        total = 0.0
        for c in range(k):
            total += part[c]
        out[0] = total

    return vector_update_sq


@rule(LIGHT_THRESHOLD)
def vector_apply():
    """theta <- theta decay - step u, u as in vector_update_sq."""

    def vector_apply(g, gs, variance, eps1sq, decay, step, p):
        gs = as_dtype_of(gs, p)
        eps1sq = as_dtype_of(eps1sq, p)
        decay = as_dtype_of(decay, p)
        step = as_dtype_of(step, p)
        one = as_dtype_of(1.0, p)
        for i in prange(p.size):
            v = variance[i]
            if v < eps1sq:
                v = eps1sq
            u = one / np.sqrt(v) * (gs * g[i])
            p[i] = p[i] * decay + (-step) * u

    return vector_apply
