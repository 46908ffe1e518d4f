"""Adafactor: CUDA twin of kernels/cpu/adafactor.py.

The row and column sums and the update's norm are CuPy reductions (``cupy_call``); the
statistics' running averages and the update are elementwise kernels. The final step size
arrives as a 1-element device array (``raw:step``), so a step never waits for the GPU.
"""

import cupy as cp

from ._elementwise import cupy_call, rule

_LERP = "a + w * (m - a)"
_LERP_HIGH = "m - (m - a) * (one - w)"


@cupy_call
def sq_sums(g, gs, rows, cols):
    """rows[b, r] = sum_c (gs g)^2, cols[b, c] = sum_r (gs g)^2, in float64."""
    x = g.astype(cp.float64) * gs[0].astype(cp.float64)
    x *= x
    cp.sum(x, axis=2, out=rows)
    cp.sum(x, axis=1, out=cols)


@rule("float64:sums float64:inv_n w | stat")
def lerp_means():
    """stat <- lerp(stat, sums * inv_n, w) (a mean of squares into a running statistic)."""
    return f"""
    const T one = 1;
    T m = (T)(sums * inv_n);
    T a = stat;
    stat = (fabs(w) < (T)0.5) ? {_LERP} : {_LERP_HIGH};
    """


@rule("g raw:gs w | variance")
def vector_stats():
    """variance <- lerp(variance, (gs g)^2, w)."""
    return f"""
    const T one = 1;
    T gi = gs[0] * g;
    T m = gi * gi;
    T a = variance;
    variance = (fabs(w) < (T)0.5) ? {_LERP} : {_LERP_HIGH};
    """


def _factored_u(g, gs, row_var, col_var, rm, eps1sq):
    v = row_var[:, :, None] * col_var[:, None, :] / rm[:, None, None]
    v = cp.maximum(v, v.dtype.type(eps1sq))
    return (1 / cp.sqrt(v)) * (gs[0] * g)


@cupy_call
def factored_update_sq(g, gs, row_var, col_var, rm, eps1sq, out):
    """out[0] = sum of u^2, u = (gs g) / sqrt(max(row c / rm, eps1^2)), in float64."""
    u = _factored_u(g, gs, row_var, col_var, rm, eps1sq).astype(cp.float64)
    cp.sum(u * u, out=out.reshape(()))


@cupy_call
def vector_update_sq(g, gs, variance, eps1sq, out):
    """out[0] = sum of u^2, u = (gs g) / sqrt(max(variance, eps1^2)), in float64."""
    v = cp.maximum(variance, variance.dtype.type(eps1sq))
    u = ((1 / cp.sqrt(v)) * (gs[0] * g)).astype(cp.float64)
    cp.sum(u * u, out=out.reshape(()))


@rule("g raw:gs raw:row_var raw:col_var raw:rm eps1sq decay raw:step | p")
def factored_apply():
    """theta <- theta decay - step u, u as in factored_update_sq."""
    return """
    const ptrdiff_t nr = row_var.shape()[1], nc = col_var.shape()[1];
    const ptrdiff_t b = i / (nr * nc), r = (i / nc) % nr, c = i % nc;
    T v = row_var[b * nr + r] * col_var[b * nc + c] / rm[b];
    if (v < eps1sq) v = eps1sq;
    T u = (T)1 / sqrt(v) * (gs[0] * g);
    p = p * decay + (-step[0]) * u;
    """


@rule("g raw:gs variance eps1sq decay raw:step | p")
def vector_apply():
    """theta <- theta decay - step u, u as in vector_update_sq."""
    return """
    T v = variance;
    if (v < eps1sq) v = eps1sq;
    T u = (T)1 / sqrt(v) * (gs[0] * g);
    p = p * decay + (-step[0]) * u;
    """
