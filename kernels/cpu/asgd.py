"""ASGD, averaged SGD (torch.optim.ASGD's update)."""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, rule


@rule(LIGHT_THRESHOLD)
def asgd():
    """theta <- theta (1 - lambd eta) - eta (g + wd theta); ax <- theta, or ax + mu (theta - ax).

    ``decay = 1 - lambd * eta``; the average copies the parameter while ``mu == 1`` (the
    first ``t0`` steps, as torch: ``ax + 1 * (theta - ax)`` would round).
    """

    def asgd(g, gs, wd, decay, eta, mu, p, ax):
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
            if mu == one:
                ax[i] = pi
            else:
                ax[i] = ax[i] + (pi - ax[i]) * mu

    return asgd
