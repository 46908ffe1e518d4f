"""Model kernels: CUDA twin of kernels/cpu/nn.py.

``bias_act`` and ``act_grad`` broadcast the bias (``cols``) over ``(rows, cols)`` arrays;
``softmax_xent`` runs one thread per row over the raw logits; ``colsum`` is CuPy's own
column reduction. Where the CPU kernel fuses passes to read memory once (``act_grad_colsum``,
``l2_grad``), the twin launches the unfused kernels.
"""

import cupy as cp

from ... import _backend
from ..codes import ACT_CODES
from ._elementwise import composite, cupy_call, rule

_ACT_FORWARD = {ACT_CODES[name]: body for name, body in {
    "identity": "",
    "relu": "if (x < 0) y = 0;",
    "leaky_relu": "if (x < 0) y = alpha * x;",
    "sigmoid": "if (x >= 0) y = one / (one + exp(-x)); else { T e = exp(x); y = e / (one + e); }",
    "tanh": "y = tanh(x);",
    "softplus": "y = max(x, x * 0) + log1p(exp(-fabs(x)));",
    "gelu": "y = half * x * (one + tanh(k * (x + c3 * x * x * x)));",
}.items()}
_ACT_DERIVATIVE = {ACT_CODES[name]: body for name, body in {
    "identity": "",
    "relu": "if (!(x > 0)) f = x * 0;",
    "leaky_relu": "if (!(x > 0)) f = alpha;",
    "sigmoid": "f = y * (one - y);",
    "tanh": "f = one - y * y;",
    "softplus": "if (x >= 0) f = one / (one + exp(-x)); else { T e = exp(x); f = e / (one + e); }",
    "gelu": """T t = tanh(k * (x + c3 * x * x * x));
    f = half * (one + t) + half * x * (one - t * t) * k * (one + 3 * c3 * x * x);""",
}.items()}
_CONSTANTS = """
    const T one = 1, half = 0.5, k = 0.7978845608028654, c3 = 0.044715;"""


@rule("b alpha | z a")
def bias_act(act):
    """z <- z + b (kept: the pre-activation); a <- act(z)."""
    return f"""{_CONSTANTS}
    T x = z + b;
    z = x;
    T y = x;
    {_ACT_FORWARD[int(act)]}
    a = y;
    """


@rule("z a alpha | d")
def act_grad(act):
    """d <- d * act'(z), from the pre-activation z and the activation a."""
    return f"""{_CONSTANTS}
    T x = z;
    T y = a;
    T f = one;
    {_ACT_DERIVATIVE[int(act)]}
    d = d * f;
    """


@cupy_call
def colsum(x, out):
    """out[c] <- sum of x[:, c] (a layer's bias gradient)."""
    cp.sum(x, axis=0, out=out)


@composite("d", "out")
def act_grad_colsum(z, a, alpha, d, out, *, act):
    """d <- d * act'(z); out[c] <- sum of d[:, c]: ``act_grad``, then ``colsum``.

    The CPU kernel fuses the two passes; on the GPU each is one launch already.
    """
    _backend.launch("nn", "act_grad", (("act", act),), z, a, alpha, d)
    _backend.launch("nn", "colsum", (), d, out)


@composite("g", "out")
def l2_grad(w, l2, g, out):
    """g <- g + l2 w; out[0] += sum of w^2 (float64): ``axpy``, then ``sumsq`` (no sync)."""
    _backend.launch("axpy", "axpy", (), w, l2, g)
    out += _backend.reduce("sumsq", w).sum()


@cupy_call
def correct_labels(z, y, out):
    """out[0] += rows whose largest output is the label (CuPy's argmax: first on ties)."""
    out += (z.argmax(axis=1) == y).sum()


@cupy_call
def correct_binary(z, y, out):
    """out[0] += outputs whose sign matches the 0/1 target ((z > 0) == y)."""
    out += ((z > 0) == y).sum()


@rule("int64:y inv_n | raw:z loss")
def softmax_xent():
    """Row-wise softmax cross-entropy on logits z with integer labels y (fused backward)."""
    return """
    const ptrdiff_t cols = z.shape()[1];
    const ptrdiff_t r = i;
    T m = z[r * cols];
    for (ptrdiff_t c = 1; c < cols; ++c) {
        T v = z[r * cols + c];
        if (v > m || v != v) m = v;
    }
    const ptrdiff_t t = y;
    const T zt = z[r * cols + t];
    T s = 0;
    for (ptrdiff_t c = 0; c < cols; ++c) {
        T e = exp(z[r * cols + c] - m);
        z[r * cols + c] = e;
        s += e;
    }
    loss = log(s) + m - zt;
    const T inv_s = 1 / s;
    for (ptrdiff_t c = 0; c < cols; ++c) z[r * cols + c] = z[r * cols + c] * inv_s * inv_n;
    z[r * cols + t] = z[r * cols + t] - inv_n;
    """


@rule("y inv_n | z loss")
def bce_logits():
    """Binary cross-entropy on logits z with targets y in [0, 1] (fused backward)."""
    return """
    const T one = 1;
    T x = z;
    T t = y;
    loss = max(x, x * 0) - x * t + log1p(exp(-fabs(x)));
    T s;
    if (x >= 0) s = one / (one + exp(-x)); else { T e = exp(x); s = e / (one + e); }
    z = (s - t) * inv_n;
    """


@rule("y inv_n | z loss")
def mse():
    """Squared error (z - y)^2; z <- 2 (z - y) inv_n."""
    return """
    T r = z - y;
    loss = r * r;
    z = 2 * r * inv_n;
    """


@rule("y delta inv_n | z loss")
def huber():
    """Huber loss with threshold delta; z <- its derivative times inv_n."""
    return """
    const T half = 0.5;
    T r = z - y;
    T ar = fabs(r);
    if (ar <= delta) { loss = half * r * r; z = r * inv_n; }
    else { loss = delta * (ar - half * delta); z = (r > 0 ? delta : -delta) * inv_n; }
    """


@rule("y inv_n | z loss")
def poisson():
    """Poisson deviance with a log link on z; z <- (e^z - y) inv_n."""
    return """
    T x = z;
    T t = y;
    T mu = exp(x);
    T c = t > 0 ? t * log(t) : T(0);
    loss = mu - t * x + c - t;
    z = (mu - t) * inv_n;
    """


@cupy_call
def rowscale(w, x):
    """x[r, :] <- x[r, :] * w[r]."""
    x *= w.astype(x.dtype, copy=False)[:, None]


def _csr(indptr, indices, data, shape):
    import cupyx.scipy.sparse as sp

    return sp.csr_matrix((data, indices, indptr), shape=shape)


@cupy_call
def dense_to_csr(x, dense_at, indptr, indices, data, dense):
    """x's nonzeros in CSR form but the columns with dense_at >= 0, copied into dense."""
    kept = dense_at < 0
    mask = (x != 0) & kept[None, :]
    indptr[0] = 0
    cp.cumsum(mask.sum(axis=1), out=indptr[1:])
    r, c = cp.nonzero(mask)
    indices[: c.size] = c
    data[: c.size] = x[r, c]
    moved = cp.flatnonzero(dense_at >= 0)
    dense[:, dense_at[moved]] = x[:, moved]


@cupy_call
def csr_matmul(indptr, indices, data, rows, w, out):
    """out[i] <- X[rows[i]] W for X in CSR form (cuSPARSE through CuPy)."""
    out[...] = _csr(indptr, indices, data, (indptr.size - 1, w.shape[0]))[rows] @ w


@cupy_call
def csr_tmatmul(indptr, indices, data, rows, d, sort, out, starts, batch_rows, values):
    """out <- X[rows]^T D for X in CSR form (the CPU kernel's sorting scratch unused)."""
    out[...] = _csr(indptr, indices, data, (indptr.size - 1, out.shape[0]))[rows].T @ d


@cupy_call
def linear_xent(x, wt, b, y, sw, inv_n, zbuf, gbuf, gt, gb, correct, loss, *, softmax):
    """A linear model's cross-entropy and gradients: cuBLAS matmuls around CuPy's row
    softmax (``softmax``) or elementwise sigmoid, per chunk of rows as the CPU kernel
    splits them (no scratch needed)."""
    rows, chunks = x.shape[0], loss.size
    inv = x.dtype.type(inv_n)
    for t in range(chunks):
        lo, hi = rows * t // chunks, rows * (t + 1) // chunks
        z = x[lo:hi] @ wt.T
        z += b
        yt = y[lo:hi]
        if softmax:
            correct[t] = (z.argmax(axis=1) == yt).sum()
            m = z.max(axis=1, keepdims=True)
            e = cp.exp(z - m)
            s = e.sum(axis=1, keepdims=True)
            idx = cp.arange(hi - lo)
            per_row = (cp.log(s[:, 0]) + m[:, 0] - z[idx, yt]).astype(cp.float64)
            dz = e * (1 / s) * inv
            dz[idx, yt] -= inv
        else:
            correct[t] = ((z > 0) == yt).sum()
            per = cp.maximum(z, 0) - z * yt + cp.log1p(cp.exp(-cp.abs(z)))
            per_row = per.astype(cp.float64).sum(axis=1)
            dz = (1 / (1 + cp.exp(-z)) - yt) * inv
        if sw.size:
            dz *= sw[lo:hi, None].astype(x.dtype)
            per_row *= sw[lo:hi]
        loss[t] = per_row.sum()
        gb[t] = dz.sum(axis=0)
        gt[t] = dz.T @ x[lo:hi]
