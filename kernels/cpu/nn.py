"""Fused elementwise kernels of the models: bias + activation, activation derivative,
and losses with their gradients.

They run serially (``NEVER_PARALLEL``): they sit between BLAS matmuls, whose worker
threads would contend with Numba's. They take 2-D ``(rows, cols)`` arrays where a bias
broadcasts over rows (``bias_act``, ``act_grad``, ``softmax_xent``) and 1-D arrays
otherwise. The activation is a variant flag
(``act``, one of :data:`ACT_CODES`); its slope ``alpha`` (leaky ReLU) is a scalar argument.
Losses overwrite the model output ``z`` with ``dL/dz`` (already divided by the batch size
through ``inv_n``) and write each row's or element's loss into ``loss``.
"""

import numpy as np
from numba import prange

from ..codes import ACT_CODES
from ._jit import NEVER_PARALLEL, as_dtype_of, rule

_RELU, _LEAKY, _SIGMOID, _TANH, _SOFTPLUS, _GELU = (
    ACT_CODES[k] for k in ("relu", "leaky_relu", "sigmoid", "tanh", "softplus", "gelu"))
#: Values of the non-boolean variant flags (for tests that build every variant).
FLAG_VALUES = {"act": tuple(ACT_CODES.values())}


@rule(NEVER_PARALLEL)
def bias_act(act):
    """z <- z + b (kept: the pre-activation); a <- act(z)."""

    def bias_act(b, alpha, z, a):
        alpha = as_dtype_of(alpha, z)
        zero = as_dtype_of(0.0, z)
        one = as_dtype_of(1.0, z)
        half = as_dtype_of(0.5, z)
        k = as_dtype_of(0.7978845608028654, z)  # sqrt(2 / pi)
        c3 = as_dtype_of(0.044715, z)
        rows, cols = z.shape
        for r in prange(rows):
            for c in range(cols):
                x = z[r, c] + b[c]
                z[r, c] = x
                y = x
                if act == _RELU:
                    if x < 0:
                        y = zero
                elif act == _LEAKY:
                    if x < 0:
                        y = alpha * x
                elif act == _SIGMOID:
                    if x >= 0:
                        y = one / (one + np.exp(-x))
                    else:
                        e = np.exp(x)
                        y = e / (one + e)
                elif act == _TANH:
                    y = np.tanh(x)
                elif act == _SOFTPLUS:
                    y = max(x, x * 0) + np.log1p(np.exp(-abs(x)))
                elif act == _GELU:
                    y = half * x * (one + np.tanh(k * (x + c3 * x * x * x)))
                a[r, c] = y

    return bias_act


@rule(NEVER_PARALLEL)
def act_grad(act):
    """d <- d * act'(z), from the pre-activation z and the activation a."""

    def act_grad(z, a, alpha, d):
        alpha = as_dtype_of(alpha, d)
        one = as_dtype_of(1.0, d)
        half = as_dtype_of(0.5, d)
        k = as_dtype_of(0.7978845608028654, d)
        c3 = as_dtype_of(0.044715, d)
        rows, cols = d.shape
        for r in prange(rows):
            for c in range(cols):
                x = z[r, c]
                y = a[r, c]
                f = one
                if act == _RELU:
                    if not x > 0:
                        f = x * 0
                elif act == _LEAKY:
                    if not x > 0:
                        f = alpha
                elif act == _SIGMOID:
                    f = y * (one - y)
                elif act == _TANH:
                    f = one - y * y
                elif act == _SOFTPLUS:
                    if x >= 0:
                        f = one / (one + np.exp(-x))
                    else:
                        e = np.exp(x)
                        f = e / (one + e)
                elif act == _GELU:
                    t = np.tanh(k * (x + c3 * x * x * x))
                    f = half * (one + t) + half * x * (one - t * t) * k * (
                        one + 3 * c3 * x * x)
                d[r, c] = d[r, c] * f

    return act_grad


@rule(NEVER_PARALLEL)
def colsum():
    """out[c] <- sum of x[:, c]: a layer's bias gradient, added row by row."""

    def colsum(x, out):
        rows, cols = x.shape
        for c in range(cols):
            out[c] = 0
        for r in range(rows):
            for c in range(cols):
                out[c] += x[r, c]

    return colsum


@rule(NEVER_PARALLEL)
def correct_labels():
    """out[0] += rows whose largest output is the label (argmax z == y; first on ties)."""

    def correct_labels(z, y, out):
        rows, cols = z.shape
        n = 0
        for r in range(rows):
            best = 0
            for c in range(1, cols):
                if z[r, c] > z[r, best]:
                    best = c
            if best == y[r]:
                n += 1
        out[0] += n

    return correct_labels


@rule(NEVER_PARALLEL)
def correct_binary():
    """out[0] += outputs whose sign matches the 0/1 target ((z > 0) == y)."""

    def correct_binary(z, y, out):
        one = as_dtype_of(1.0, z)
        zero = as_dtype_of(0.0, z)
        n = 0
        for i in range(z.size):
            if (z[i] > zero and y[i] == one) or (not z[i] > zero and y[i] == zero):
                n += 1
        out[0] += n

    return correct_binary


@rule(NEVER_PARALLEL)
def softmax_xent():
    """Row-wise softmax cross-entropy on logits z with integer labels y (fused backward)."""

    def softmax_xent(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        rows, cols = z.shape
        for r in prange(rows):
            m = z[r, 0]
            for c in range(1, cols):
                if z[r, c] > m or z[r, c] != z[r, c]:
                    m = z[r, c]
            t = y[r]
            zt = z[r, t]
            s = z[r, 0] * 0
            for c in range(cols):
                e = np.exp(z[r, c] - m)
                z[r, c] = e
                s += e
            loss[r] = np.log(s) + m - zt
            inv_s = 1 / s
            for c in range(cols):
                z[r, c] = z[r, c] * inv_s * inv_n
            z[r, t] = z[r, t] - inv_n

    return softmax_xent


@rule(NEVER_PARALLEL)
def bce_logits():
    """Binary cross-entropy on logits z with targets y in [0, 1] (fused backward)."""

    def bce_logits(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        one = as_dtype_of(1.0, z)
        for i in prange(z.size):
            x = z[i]
            t = y[i]
            loss[i] = max(x, x * 0) - x * t + np.log1p(np.exp(-abs(x)))
            if x >= 0:
                s = one / (one + np.exp(-x))
            else:
                e = np.exp(x)
                s = e / (one + e)
            z[i] = (s - t) * inv_n

    return bce_logits


@rule(NEVER_PARALLEL)
def mse():
    """Squared error (z - y)^2; z <- 2 (z - y) inv_n."""

    def mse(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        for i in prange(z.size):
            r = z[i] - y[i]
            loss[i] = r * r
            z[i] = 2 * r * inv_n

    return mse


@rule(NEVER_PARALLEL)
def huber():
    """Huber loss with threshold delta; z <- its derivative times inv_n."""

    def huber(y, delta, inv_n, z, loss):
        delta = as_dtype_of(delta, z)
        inv_n = as_dtype_of(inv_n, z)
        half = as_dtype_of(0.5, z)
        for i in prange(z.size):
            r = z[i] - y[i]
            ar = abs(r)
            if ar <= delta:
                loss[i] = half * r * r
                z[i] = r * inv_n
            else:
                loss[i] = delta * (ar - half * delta)
                if r > 0:
                    z[i] = delta * inv_n
                else:
                    z[i] = -delta * inv_n

    return huber


@rule(NEVER_PARALLEL)
def poisson():
    """Poisson deviance with a log link on z: e^z - y z + y log y - y; z <- (e^z - y) inv_n."""

    def poisson(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        zero = as_dtype_of(0.0, z)
        for i in prange(z.size):
            x = z[i]
            t = y[i]
            mu = np.exp(x)
            c = zero
            if t > zero:
                c = t * np.log(t)
            loss[i] = mu - t * x + c - t
            z[i] = (mu - t) * inv_n

    return poisson


@rule(NEVER_PARALLEL)
def rowscale():
    """x[r, :] <- x[r, :] * w[r] (sample weights on a loss gradient)."""

    def rowscale(w, x):
        rows, cols = x.shape
        for r in range(rows):
            f = as_dtype_of(w[r], x)
            for c in range(cols):
                x[r, c] = x[r, c] * f

    return rowscale


@rule(NEVER_PARALLEL)
def csr_matmul():
    """out <- X W for X in CSR form (indptr, indices, data): a sparse first layer."""

    def csr_matmul(indptr, indices, data, w, out):
        rows, cols = out.shape
        for r in range(rows):
            for c in range(cols):
                out[r, c] = 0
            for j in range(indptr[r], indptr[r + 1]):
                v = data[j]
                k = indices[j]
                for c in range(cols):
                    out[r, c] += v * w[k, c]

    return csr_matmul


@rule(NEVER_PARALLEL)
def csr_tmatmul():
    """out <- X^T D for X in CSR form: the sparse first layer's weight gradient."""

    def csr_tmatmul(indptr, indices, data, d, out):
        features, cols = out.shape
        for k in range(features):
            for c in range(cols):
                out[k, c] = 0
        for r in range(indptr.size - 1):
            for j in range(indptr[r], indptr[r + 1]):
                v = data[j]
                k = indices[j]
                for c in range(cols):
                    out[k, c] += v * d[r, c]

    return csr_tmatmul
