"""Adamax (torch.optim.Adamax's update)."""

from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def adamax(average):
    """m <- m + (1-b1)(g-m); u <- max(b2 u, |g| + eps); theta <- theta - clr m/u."""

    def adamax(g, gs, wd, one_minus_beta1, beta2, eps, clr, avg_w, avg_w1, avg_div, p, m, u, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        one_minus_beta1 = as_dtype_of(one_minus_beta1, p)
        beta2 = as_dtype_of(beta2, p)
        eps = as_dtype_of(eps, p)
        clr = as_dtype_of(clr, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            mi = m[i] + one_minus_beta1 * (gi - m[i])
            m[i] = mi
            ui = beta2 * u[i]
            ai = abs(gi) + eps
            # NaN-propagating maximum, as torch.maximum.
            if ai > ui or ai != ai:
                ui = ai
            u[i] = ui
            pn = p[i] - clr * (mi / ui)
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return adamax
