"""Row-sparse kernels: coalescing repeated rows, and SparseAdam's update of touched rows."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, LIGHT_THRESHOLD, as_dtype_of, rule


@rule(LIGHT_THRESHOLD)
def coalesce_rows():
    """out[u] = sum of rows[order[starts[u] : starts[u + 1]]] (the rows of one index)."""

    def coalesce_rows(order, starts, rows, out):
        u_count = starts.size
        n = order.size
        for u in prange(u_count):
            lo = starts[u]
            hi = starts[u + 1] if u + 1 < u_count else n
            dst = out[u]
            src = rows[order[lo]]
            for j in range(dst.size):
                dst[j] = src[j]
            for r in range(hi - lo - 1):
                src = rows[order[lo + 1 + r]]
                for j in range(dst.size):
                    dst[j] = dst[j] + src[j]

    return coalesce_rows


@rule(HEAVY_THRESHOLD)
def sparse_adam():
    """For each touched row r: m, v as Adam; theta <- theta - step_size m / (sqrt(v) + eps).

    torch.optim.SparseAdam's form: ``step_size = lr sqrt(1 - b2^t) / (1 - b1^t)`` and eps
    added to the uncorrected ``sqrt(v)``. ``rows`` are unique; ``vals`` one row each.
    """

    def sparse_adam(rows, vals, gs, one_minus_beta1, one_minus_beta2, eps, step_size, p, m,
                    v):
        gs = as_dtype_of(gs, p)
        one_minus_beta1 = as_dtype_of(one_minus_beta1, p)
        one_minus_beta2 = as_dtype_of(one_minus_beta2, p)
        eps = as_dtype_of(eps, p)
        step_size = as_dtype_of(step_size, p)
        for k in prange(rows.size):
            r = rows[k]
            # separate assignments: a 4-name tuple assignment miscompiles under prange
            # (shared/reference/numba-pitfalls.md, item 1)
            gk = vals[k]
            pr = p[r]
            mr = m[r]
            vr = v[r]
            for j in range(pr.size):
                gi = gs * gk[j]
                mi = mr[j] + (gi - mr[j]) * one_minus_beta1
                mr[j] = mi
                vi = vr[j] + (gi * gi - vr[j]) * one_minus_beta2
                vr[j] = vi
                pr[j] = pr[j] + (-step_size) * (mi / (np.sqrt(vi) + eps))

    return sparse_adam
