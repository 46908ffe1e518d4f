"""Adamax (torch.optim.Adamax's update)."""

from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, rule


@rule(HEAVY_THRESHOLD)
def adamax():
    """m <- m + (1-b1)(g-m); u <- max(b2 u, |g| + eps); theta <- theta - clr m/u."""

    def adamax(g, gs, wd, one_minus_beta1, beta2, eps, clr, p, m, u):
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
            p[i] = p[i] - clr * (mi / ui)

    return adamax
