"""Muon's elementwise steps (torch.optim.Muon's update); the Newton-Schulz matmuls are BLAS.

``lerp`` is torch's: ``a + w (b - a)`` for ``|w| < 0.5``, else ``b - (b - a)(1 - w)``.
"""

from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, rule


@rule(LIGHT_THRESHOLD)
def muon_momentum(nesterov):
    """buf <- lerp(buf, g, 1 - mu); upd <- lerp(g, buf, mu) (Nesterov) or buf."""

    def muon_momentum(g, gs, one_minus_mu, mu, buf, upd):
        gs = as_dtype_of(gs, buf)
        w = as_dtype_of(one_minus_mu, buf)
        mu = as_dtype_of(mu, buf)
        one = as_dtype_of(1.0, buf)
        half = as_dtype_of(0.5, buf)
        for i in prange(buf.size):
            gi = gs * g[i]
            a = buf[i]
            b = a + w * (gi - a) if abs(w) < half else gi - (gi - a) * (one - w)
            buf[i] = b
            if nesterov:
                upd[i] = gi + mu * (b - gi) if abs(mu) < half else b - (b - gi) * (one - mu)
            else:
                upd[i] = b

    return muon_momentum


@rule(LIGHT_THRESHOLD)
def axpby():
    """y <- a x + b y (the Newton-Schulz iteration's combinations)."""

    def axpby(x, a, b, y):
        a = as_dtype_of(a, y)
        b = as_dtype_of(b, y)
        for i in prange(y.size):
            y[i] = a * x[i] + b * y[i]

    return axpby


@rule(LIGHT_THRESHOLD)
def muon_apply(transposed):
    """theta <- theta decay - step x (x is the transposed orthogonal update if flagged)."""

    def muon_apply(x, decay, step, p):
        decay = as_dtype_of(decay, p)
        step = as_dtype_of(step, p)
        rows, cols = p.shape
        for r in prange(rows):
            for c in range(cols):
                u = x[c, r] if transposed else x[r, c]
                p[r, c] = p[r, c] * decay + (-step) * u

    return muon_apply
