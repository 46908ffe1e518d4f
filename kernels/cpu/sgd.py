"""SGD, with and without momentum (torch.optim.SGD's update)."""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, rule


@rule(LIGHT_THRESHOLD)
def sgd():
    """theta <- theta - lr * (gs * g + wd * theta)."""

    def sgd(g, gs, wd, lr, p):
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        lr = as_dtype_of(lr, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            p[i] = p[i] - lr * gi

    return sgd


@rule(LIGHT_THRESHOLD)
def sgd_momentum(nesterov):
    """buf <- momentum * buf + damp * g; theta <- theta - lr * (g + momentum * buf | buf).

    On a parameter's first step the caller passes ``damp = 1`` over a zero buffer, which
    makes ``buf = g`` exactly (torch clones the gradient there and skips dampening).
    """

    def sgd_momentum(g, gs, wd, lr, momentum, damp, p, buf):
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        lr = as_dtype_of(lr, p)
        momentum = as_dtype_of(momentum, p)
        damp = as_dtype_of(damp, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            b = momentum * buf[i] + damp * gi
            buf[i] = b
            if nesterov:
                gi = gi + momentum * b
            else:
                gi = b
            p[i] = p[i] - lr * gi

    return sgd_momentum
