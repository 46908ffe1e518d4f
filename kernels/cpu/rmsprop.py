"""RMSprop, plain, centered and with momentum (torch.optim.RMSprop's update)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def rmsprop(average, centered, use_momentum):
    """sq <- alpha sq + (1-alpha) g^2; denom = sqrt(sq [- ga^2]) + eps; step g/denom [via buf].

    ``ga`` (centered) and ``buf`` (momentum) are only touched by the variants that use
    them; callers pass any array of the right length (the parameter) otherwise.
    """

    def rmsprop(g, gs, wd, alpha, one_minus_alpha, eps, lr, momentum, avg_w,
                avg_w1, avg_div, p, sq, ga,
                buf, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        alpha = as_dtype_of(alpha, p)
        one_minus_alpha = as_dtype_of(one_minus_alpha, p)
        eps = as_dtype_of(eps, p)
        lr = as_dtype_of(lr, p)
        momentum = as_dtype_of(momentum, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            sqi = alpha * sq[i] + one_minus_alpha * (gi * gi)
            sq[i] = sqi
            if centered:
                gai = ga[i] + one_minus_alpha * (gi - ga[i])
                ga[i] = gai
                denom = np.sqrt(sqi - gai * gai) + eps
            else:
                denom = np.sqrt(sqi) + eps
            if use_momentum:
                b = momentum * buf[i] + gi / denom
                buf[i] = b
                pn = p[i] - lr * b
            else:
                pn = p[i] - lr * (gi / denom)
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return rmsprop
