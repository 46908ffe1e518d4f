"""Adagrad (torch.optim.Adagrad's update, dense gradients)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def adagrad(average):
    """s <- s + g^2; theta <- theta - clr * g / (sqrt(s) + eps)."""

    def adagrad(g, gs, wd, clr, eps, avg_w, avg_w1, avg_div, p, s, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        clr = as_dtype_of(clr, p)
        eps = as_dtype_of(eps, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            si = s[i] + gi * gi
            s[i] = si
            pn = p[i] - clr * (gi / (np.sqrt(si) + eps))
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return adagrad
