"""RAdam (torch.optim.RAdam's update)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def radam(average):
    """theta <- theta - lr m/bc1 [* bc2_sqrt / (sqrt(v) + eps) * rect when rect > 0].

    ``rect`` is the variance rectification term, or 0 while the variance is not yet
    tractable (rho_t <= 5): then the step is the un-adapted momentum step.
    """

    def radam(g, gs, l2, decay, one_minus_beta1, beta2, one_minus_beta2, bc1, lr, rect,
              bc2_sqrt, eps, avg_w, avg_w1, avg_div, p, m, v, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        l2 = as_dtype_of(l2, p)
        decay = as_dtype_of(decay, p)
        one_minus_beta1 = as_dtype_of(one_minus_beta1, p)
        beta2 = as_dtype_of(beta2, p)
        one_minus_beta2 = as_dtype_of(one_minus_beta2, p)
        bc1 = as_dtype_of(bc1, p)
        lr = as_dtype_of(lr, p)
        rect = as_dtype_of(rect, p)
        bc2_sqrt = as_dtype_of(bc2_sqrt, p)
        eps = as_dtype_of(eps, p)
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
            upd = mi / bc1 * lr
            if rect > 0:
                upd = upd * (bc2_sqrt / (np.sqrt(vi) + eps)) * rect
            pn = pi - upd
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return radam
