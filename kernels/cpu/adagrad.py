"""Adagrad (torch.optim.Adagrad's update, dense gradients)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, rule


@rule(HEAVY_THRESHOLD)
def adagrad():
    """s <- s + g^2; theta <- theta - clr * g / (sqrt(s) + eps)."""

    def adagrad(g, gs, wd, clr, eps, p, s):
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
            p[i] = p[i] - clr * (gi / (np.sqrt(si) + eps))

    return adagrad
