"""Adadelta (torch.optim.Adadelta's update)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def adadelta(average):
    """u <- rho u + (1-rho) g^2; d = sqrt(a+eps)/sqrt(u+eps) g; a <- rho a + (1-rho) d^2."""

    def adadelta(g, gs, wd, rho, one_minus_rho, eps, lr, avg_w, avg_w1, avg_div, p, u, a, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        rho = as_dtype_of(rho, p)
        one_minus_rho = as_dtype_of(one_minus_rho, p)
        eps = as_dtype_of(eps, p)
        lr = as_dtype_of(lr, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            ui = rho * u[i] + one_minus_rho * (gi * gi)
            u[i] = ui
            delta = np.sqrt(a[i] + eps) / np.sqrt(ui + eps) * gi
            a[i] = rho * a[i] + one_minus_rho * (delta * delta)
            pn = p[i] - lr * delta
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return adadelta
