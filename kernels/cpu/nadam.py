"""NAdam (torch.optim.NAdam's update)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def nadam(average):
    """theta <- theta - c_grad g/denom - c_avg m/denom, denom = sqrt(v / bc2) + eps."""

    def nadam(g, gs, l2, decay, one_minus_beta1, beta2, one_minus_beta2, bc2, eps,
              c_grad, c_avg, avg_w, avg_w1, avg_div, p, m, v, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        l2 = as_dtype_of(l2, p)
        decay = as_dtype_of(decay, p)
        one_minus_beta1 = as_dtype_of(one_minus_beta1, p)
        beta2 = as_dtype_of(beta2, p)
        one_minus_beta2 = as_dtype_of(one_minus_beta2, p)
        bc2 = as_dtype_of(bc2, p)
        eps = as_dtype_of(eps, p)
        c_grad = as_dtype_of(c_grad, p)
        c_avg = as_dtype_of(c_avg, p)
        for i in prange(p.size):
            gi = gs * g[i]
            pi = p[i]
            if l2 != 0:
                gi = gi + l2 * pi
            pi = pi * decay
            mi = m[i] + one_minus_beta1 * (gi - m[i])
            m[i] = mi
            vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
            v[i] = vi
            denom = np.sqrt(vi / bc2) + eps
            pi = pi - c_grad * (gi / denom)
            pn = pi - c_avg * (mi / denom)
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return nadam
