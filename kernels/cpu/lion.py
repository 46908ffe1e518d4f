"""Lion (Chen et al. 2023, as optax.lion computes it)."""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, averaged, rule


@rule(LIGHT_THRESHOLD)
def lion(average):
    """c = b1 m + (1-b1) g; theta <- theta - lr (sign(c) + wd theta); m <- b2 m + (1-b2) g."""

    def lion(g, gs, wd, beta1, one_minus_beta1, beta2, one_minus_beta2, lr, avg_w,
             avg_w1, avg_div, p, m,
             avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        wd = as_dtype_of(wd, p)
        beta1 = as_dtype_of(beta1, p)
        one_minus_beta1 = as_dtype_of(one_minus_beta1, p)
        beta2 = as_dtype_of(beta2, p)
        one_minus_beta2 = as_dtype_of(one_minus_beta2, p)
        lr = as_dtype_of(lr, p)
        one = as_dtype_of(1.0, p)
        for i in prange(p.size):
            gi = gs * g[i]
            mi = m[i]
            c = beta1 * mi + one_minus_beta1 * gi
            # sign with sign(0) = 0 and sign(NaN) = NaN, as jnp.sign.
            s = c
            if c > 0:
                s = one
            elif c < 0:
                s = -one
            pi = p[i]
            if wd != 0:
                s = s + wd * pi
            pn = pi - lr * s
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)
            m[i] = beta2 * mi + one_minus_beta2 * gi

    return lion
