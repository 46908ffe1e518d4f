"""SGD, with and without momentum (torch.optim.SGD's update)."""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, averaged, rule


@rule(LIGHT_THRESHOLD)
def sgd(average):
    """theta <- theta - lr * (gs * g + wd * theta)."""

    def sgd(g, gs, wd, lr, avg_w, avg_w1, avg_div, p, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        lr = as_dtype_of(lr, p)
        for i in prange(p.size):
            gi = gs * g[i]
            if wd != 0:
                gi = gi + wd * p[i]
            pn = p[i] - lr * gi
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return sgd


@rule(LIGHT_THRESHOLD)
def sgd_momentum(average, nesterov):
    """buf <- momentum * buf + damp * g; theta <- theta - lr * (g + momentum * buf | buf).

    On a parameter's first step the caller passes ``damp = 1`` over a zero buffer, which
    makes ``buf = g`` exactly (torch clones the gradient there and skips dampening).
    """

    def sgd_momentum(g, gs, wd, lr, momentum, damp, avg_w, avg_w1, avg_div, p, buf, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
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
            pn = p[i] - lr * gi
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return sgd_momentum
