"""ASGD, averaged SGD (torch.optim.ASGD's update)."""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, averaged, rule


@rule(LIGHT_THRESHOLD)
def asgd(average):
    """theta <- theta (1 - lambd eta) - eta (g + wd theta); ax <- theta, or ax + mu (theta - ax).

    ``decay = 1 - lambd * eta``; the average copies the parameter while ``mu == 1`` (the
    first ``t0`` steps, as torch: ``ax + 1 * (theta - ax)`` would round).
    """

    def asgd(g, gs, wd, decay, eta, mu, avg_w, avg_w1, avg_div, p, ax, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        decay = as_dtype_of(decay, p)
        eta = as_dtype_of(eta, p)
        mu = as_dtype_of(mu, p)
        one = as_dtype_of(1.0, p)
        for i in prange(p.size):
            pi = p[i]
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * pi
            pi = pi * decay
            pi = pi - eta * gi
            p[i] = pi
            if average:
                avg[i] = averaged(avg[i], pi, avg_w, avg_w1, avg_div)
            if mu == one:
                ax[i] = pi
            else:
                ax[i] = ax[i] + (pi - ax[i]) * mu

    return asgd
