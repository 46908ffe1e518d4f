"""RMSprop, plain, centered and with momentum (torch.optim.RMSprop's update)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, rule


@rule(HEAVY_THRESHOLD)
def rmsprop(centered, use_momentum):
    """sq <- alpha sq + (1-alpha) g^2; avg = sqrt(sq [- ga^2]) + eps; step g/avg [via buf].

    ``ga`` (centered) and ``buf`` (momentum) are only touched by the variants that use
    them; callers pass any array of the right length (the parameter) otherwise.
    """

    def rmsprop(g, gs, wd, alpha, one_minus_alpha, eps, lr, momentum, p, sq, ga, buf):
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
                avg = np.sqrt(sqi - gai * gai) + eps
            else:
                avg = np.sqrt(sqi) + eps
            if use_momentum:
                b = momentum * buf[i] + gi / avg
                buf[i] = b
                p[i] = p[i] - lr * b
            else:
                p[i] = p[i] - lr * (gi / avg)

    return rmsprop
