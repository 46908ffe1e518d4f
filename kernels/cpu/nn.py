"""Fused elementwise kernels of the models: bias + activation, activation derivative,
and losses with their gradients.

The elementwise kernels run serially (``NEVER_PARALLEL``): they sit between BLAS matmuls,
whose worker threads would contend with Numba's. The kernels that stand in for BLAS (the
CSR products of a sparse first layer and its conversion from a dense ``X``, the one-pass
linear model) run on every thread above a work threshold (``launch_sized``), with results
that do not depend on the threads. They
take 2-D ``(rows, cols)`` arrays where a bias
broadcasts over rows (``bias_act``, ``act_grad``, ``softmax_xent``) and 1-D arrays
otherwise. The activation is a variant flag
(``act``, one of :data:`ACT_CODES`); its slope ``alpha`` (leaky ReLU) is a scalar argument.
Losses overwrite the model output ``z`` with ``dL/dz`` (already divided by the batch size
through ``inv_n``) and write each row's or element's loss into ``loss``.
"""

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload, register_jitable

from ..codes import ACT_CODES, LINEAR_BLOCK
from ._jit import _JIT_OPTIONS, NEVER_PARALLEL, as_dtype_of, rule

#: Multiply-adds (rows x features x outputs) from which the one-pass linear kernel runs on
#: every thread (below it, models take BLAS's two passes). Measured here against BLAS on
#: one thread (float64, 10 classes): 1437 x 64 (0.9e6) 203-286 us against 187-268 us,
#: 4000 x 64 (2.6e6) 529 against 736 us, 1437 x 200 (2.9e6) 650 against 654 us.
LINEAR_THRESHOLD = 1 << 21

@intrinsic
def _pow2(typingctx: Any, kf: Any) -> Any:  # pragma: no cover - Numba typing
    """2**kf for an integral float ``kf`` in the normal exponent range, built from bits."""
    if not isinstance(kf, types.Float):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        it = ir.IntType(kf.bitwidth)
        bias, shift = (1023, 52) if kf.bitwidth == 64 else (127, 23)
        bits = builder.shl(builder.add(builder.fptosi(args[0], it), ir.Constant(it, bias)),
                           ir.Constant(it, shift))
        return builder.bitcast(bits, context.get_value_type(kf))

    return kf(kf), codegen


#: The compile options of the math functions kernels call (not inline): no fast-math, set
#: explicitly. Numba compiles a called function once per signature, and one whose
#: ``fastmath`` is not set takes its first caller's: compiled first by the one-pass linear
#: kernel (``reassoc``, ``contract``), ``_exp64`` would compute with fused multiply-adds
#: for every later kernel of the process, and for the disk cache (tanh then fell outside
#: its 1 ulp, and results depended on which kernel a process compiled first).
_MATH_OPTIONS = dict(_JIT_OPTIONS, fastmath=False)


# exp(x) = 2^k e^r with k = rint(x / ln 2) and r = x - k ln 2 (|r| <= ln(2) / 2; ln 2 in two
# parts, the first exact times any k used), e^r by a polynomial: in float64 a Chebyshev fit
# of degree 11 on [-ln(2) / 2, ln(2) / 2] (mpmath's chebyfit in 50-digit arithmetic; error
# 3e-18, where the Taylor polynomial of degree 13 it replaced truncated at 2^-55), in float32
# the Taylor polynomial of degree 7 (truncation below 2^-27 relative; a fit's coefficients
# would lose its gain to float32 rounding), 2^k as two factors so that results down to the
# subnormals round once. x is clamped where e^x is already 0 or
# inf in the type (NaN passes through). Written without calls or branches, a loop of it
# vectorizes, where libm's exp is a scalar call per element: within 1 ulp of it (tested).
@njit(**_MATH_OPTIONS)
def _exp64(x):  # pragma: no cover - compiled
    xc = -1400.0 if x < -1400.0 else x
    xc = 1400.0 if xc > 1400.0 else xc
    kf = np.rint((xc if xc == xc else 0.0) * 1.4426950408889634)
    r = (xc - kf * 0.6931471803691238) - kf * 1.9082149292705877e-10
    p = 2.5110037605963777e-08
    for c in (2.763263963904103e-07, 2.755724091857897e-06, 2.4801485482328494e-05,
              0.00019841269890047113, 0.0013888888952314775, 0.008333333333319601,
              0.0416666666664881, 0.1666666666666668, 0.5000000000000019, 1.0, 1.0):
        p = p * r + c
    k1 = np.floor(kf * 0.5)
    return p * _pow2(k1) * _pow2(kf - k1)


@njit(**_MATH_OPTIONS)
def _exp32(x):  # pragma: no cover - compiled
    lo = np.float32(-170.0)
    hi = np.float32(170.0)
    xc = lo if x < lo else x
    xc = hi if xc > hi else xc
    kf = np.rint((xc if xc == xc else np.float32(0.0)) * np.float32(1.4426950408889634))
    r = (xc - kf * np.float32(0.693145751953125)) - kf * np.float32(1.428606820309417e-06)
    p = np.float32(1.984126984126984e-04)
    for c in (np.float32(1.388888888888889e-03), np.float32(8.333333333333333e-03),
              np.float32(4.1666666666666664e-02), np.float32(0.16666666666666666),
              np.float32(0.5), np.float32(1.0), np.float32(1.0)):
        p = p * r + c
    k1 = np.floor(kf * np.float32(0.5))
    return p * _pow2(k1) * _pow2(kf - k1)


def _vectorizable(reference: Any, f64: Any, f32: Any, doc: str) -> Any:
    """A math function for the kernels' loops: ``f64`` or ``f32`` by its argument's type.

    Called from Python it is ``reference`` (NumPy's). ``f64`` / ``f32`` keep their own
    compile flags (``_MATH_OPTIONS``: fast-math off, set, so not taken from a caller)
    unless they are built ``inline="always"``: a caller's fast-math flags (the one-pass
    kernel reassociates its sums) never reach the others' range reductions.
    """

    def fn(x: Any) -> Any:
        return reference(x)

    @overload(fn, inline="always")
    def _by_type(x):  # pragma: no cover - runs inside Numba's type inference
        if x == types.float64:
            return lambda x: f64(x)
        if x == types.float32:
            return lambda x: f32(x)
        return None

    fn.__doc__ = doc
    return fn


vexp = _vectorizable(np.exp, _exp64, _exp32, "e^x within 1 ulp; a loop of it vectorizes.")


# tanh(x) = sign(x) t(|x|): below |x| = 0.55, a + a^3 q(a^2) with q a polynomial fitted to
# (tanh(a) - a) / a^3 on [0, 0.55^2] (a Chebyshev fit in 50-digit arithmetic, mpmath's
# chebyfit; 12 terms in float64, 6 in float32, where the Taylor series took 20 and 10:
# fitting error 2e-19 / 4e-10 on q, below 1e-3 ulp of the result); from 0.55 on
# 1 - 2 / (e^2a + 1) (>= 0.5: no cancellation; e^2a from the exponential above, inf for
# large a). Within 1 ulp of the exact value (tested); a loop of it vectorizes where libm's
# tanh is a scalar call. Inlined into the caller's IR (LLVM would not inline the call):
# only for kernels without fast-math flags.
@njit(inline="always", **_JIT_OPTIONS)
def _tanh64(x):  # pragma: no cover - compiled
    a = abs(x)
    s = a * a
    q = 7.874274345344419e-06
    q = q * s + -3.372080112046316e-05
    q = q * s + 9.455133052924858e-05
    q = q * s + -0.0002384727248015252
    q = q * s + 0.0005899052969492733
    q = q * s + -0.001455819097151351
    q = q * s + 0.0035921267699626346
    q = q * s + -0.0088632354631468
    q = q * s + 0.021869488534073906
    q = q * s + -0.05396825396822037
    q = q * s + 0.1333333333333331
    q = q * s + -0.3333333333333333
    small = a + a * s * q
    large = 1.0 - 2.0 / (_exp64(a + a) + 1.0)
    return np.copysign(small if a < 0.55 else large, x)


@njit(inline="always", **_JIT_OPTIONS)
def _tanh32(x):  # pragma: no cover - compiled
    a = abs(x)
    s = a * a
    q = np.float32(0.0025263907105745136)
    q = q * s + np.float32(-0.00852633305780133)
    q = q * s + np.float32(0.021818449128639904)
    q = q * s + np.float32(-0.0539647004451583)
    q = q * s + np.float32(0.13333324200007313)
    q = q * s + np.float32(-0.3333333329502591)
    small = a + a * s * q
    one = np.float32(1.0)
    large = one - np.float32(2.0) / (_exp32(a + a) + one)
    return np.copysign(small if a < np.float32(0.55) else large, x)


vtanh = _vectorizable(np.tanh, _tanh64, _tanh32, "tanh(x) within 1 ulp; vectorizes.")


# log(1 + e) for e in [0, 1] (the binary cross-entropy's log1p(e^-|z|)): with
# u = e / (2 + e) in [0, 1/3], log(1 + e) = 2 atanh(u) = 2u (1 + u^2/3 + u^4/5 + ...)
# (17 terms in float64, 8 in float32: truncation below 2^-54 / 2^-25 relative). Within
# 2 ulp of log1p (tested); no call, so a loop of it vectorizes. Not inlined into the
# caller's IR, and its fast-math off explicitly (``_MATH_OPTIONS``): the one-pass kernel's
# flags never reach it.
@njit(**_MATH_OPTIONS)
def _log1p_unit64(e):  # pragma: no cover - compiled
    u = e / (2.0 + e)
    w = u * u
    p = 0.02857142857142857
    p = p * w + 0.030303030303030304
    p = p * w + 0.03225806451612903
    p = p * w + 0.034482758620689655
    p = p * w + 0.037037037037037035
    p = p * w + 0.04
    p = p * w + 0.043478260869565216
    p = p * w + 0.047619047619047616
    p = p * w + 0.05263157894736842
    p = p * w + 0.058823529411764705
    p = p * w + 0.06666666666666667
    p = p * w + 0.07692307692307693
    p = p * w + 0.09090909090909091
    p = p * w + 0.1111111111111111
    p = p * w + 0.14285714285714285
    p = p * w + 0.2
    p = p * w + 0.3333333333333333
    return (u + u) + (u + u) * w * p


@njit(**_MATH_OPTIONS)
def _log1p_unit32(e):  # pragma: no cover - compiled
    u = e / (np.float32(2.0) + e)
    w = u * u
    p = np.float32(0.058823529411764705)
    p = p * w + np.float32(0.06666666666666667)
    p = p * w + np.float32(0.07692307692307693)
    p = p * w + np.float32(0.09090909090909091)
    p = p * w + np.float32(0.1111111111111111)
    p = p * w + np.float32(0.14285714285714285)
    p = p * w + np.float32(0.2)
    p = p * w + np.float32(0.3333333333333333)
    return (u + u) + (u + u) * w * p


vlog1p_unit = _vectorizable(np.log1p, _log1p_unit64, _log1p_unit32,
                            "log(1 + e) for e in [0, 1] within 2 ulp; vectorizes.")


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
                    e = vexp(-abs(x))  # e^-x or e^x: never overflows
                    if x >= 0:
                        y = one / (one + e)
                    else:
                        y = e / (one + e)
                elif act == _TANH:
                    y = vtanh(x)
                elif act == _SOFTPLUS:
                    y = max(x, x * zero) + vlog1p_unit(vexp(-abs(x)))
                elif act == _GELU:
                    y = half * x * (one + vtanh(k * (x + c3 * x * x * x)))
                a[r, c] = y

    return bias_act


@register_jitable(inline="always")
def _derivative(act, x, y, alpha, d):
    """act'(x) from the pre-activation ``x`` and the activation ``y = act(x)``.

    ``alpha`` and every constant are of the dtype of the array ``d`` (a float64 constant
    would make a float32 loop compute in float64); the constants fold at compile time.
    """
    one = as_dtype_of(1.0, d)
    half = as_dtype_of(0.5, d)
    three = as_dtype_of(3.0, d)
    k = as_dtype_of(0.7978845608028654, d)  # sqrt(2 / pi)
    c3 = as_dtype_of(0.044715, d)
    f = one
    if act == _RELU:
        if not x > 0:
            f = x * (one - one)  # (an int 0 would make the loop float64)
    elif act == _LEAKY:
        if not x > 0:
            f = alpha
    elif act == _SIGMOID:
        f = y * (one - y)
    elif act == _TANH:
        f = one - y * y
    elif act == _SOFTPLUS:
        e = vexp(-abs(x))
        if x >= 0:
            f = one / (one + e)
        else:
            f = e / (one + e)
    elif act == _GELU:
        t = vtanh(k * (x + c3 * x * x * x))
        f = half * (one + t) + half * x * (one - t * t) * k * (one + three * c3 * x * x)
    return f


@rule(NEVER_PARALLEL)
def act_grad(act):
    """d <- d * act'(z), from the pre-activation z and the activation a."""

    def act_grad(z, a, alpha, d):
        alpha = as_dtype_of(alpha, d)
        rows, cols = d.shape
        for r in prange(rows):
            for c in range(cols):
                d[r, c] = d[r, c] * _derivative(act, z[r, c], a[r, c], alpha, d)

    return act_grad


@rule(NEVER_PARALLEL)
def act_grad_colsum(act):
    """d <- d * act'(z), and out[c] <- the sum of the new d[:, c] (the bias gradient of the
    layer below), in one pass: ``act_grad`` then ``colsum``, with their results bit for bit.
    """

    def act_grad_colsum(z, a, alpha, d, out):
        alpha = as_dtype_of(alpha, d)
        rows, cols = d.shape
        for c in range(cols):
            out[c] = 0
        for r in range(rows):
            for c in range(cols):
                v = d[r, c] * _derivative(act, z[r, c], a[r, c], alpha, d)
                d[r, c] = v
                out[c] += v

    return act_grad_colsum


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


#: Elements of a weight :func:`l2_grad` updates before summing their squares.
L2_BLOCK = 2048


@rule(NEVER_PARALLEL, fastmath=frozenset({"reassoc"}))
def l2_grad():
    """g <- g + l2 w (a weight's L2 gradient), and out[0] += the sum of w^2 in float64 (its
    penalty), in one pass: ``axpy`` then the ``sumsq`` reduction (the sum in another order).
    ``reassoc`` lets the sum vectorize; the update has no sum to reorder.
    """

    def l2_grad(w, l2, g, out):
        l2 = as_dtype_of(l2, g)
        acc = 0.0
        n = g.size
        # block by block, the update and then the sum: a loop that stored to g while
        # summing would get the vectorizer's run-time overlap check, whose two outcomes
        # add in different orders (the sum's last bits would depend on where w and g lie)
        for lo in range(0, n, L2_BLOCK):
            hi = min(lo + L2_BLOCK, n)
            wb = w[lo:hi]
            gb = g[lo:hi]
            for i in range(gb.size):
                gb[i] = gb[i] + l2 * wb[i]
            s = 0.0
            for i in range(wb.size):
                v64 = np.float64(wb[i])
                s += v64 * v64
            acc += s
        out[0] += acc

    return l2_grad


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


@register_jitable(inline="always")
def _softmax_shift(z, i, lab):
    """Row i of logits z minus its largest entry (NaN if any is); returns -z[i, lab] after."""
    k = z.shape[1]
    m = z[i, 0]
    for c in range(1, k):
        if z[i, c] > m or z[i, c] != z[i, c]:
            m = z[i, c]
    for c in range(k):
        z[i, c] = z[i, c] - m
    return -z[i, lab]


@register_jitable(inline="always")
def _exp_all(z):
    """z <- e^z, every entry of a C-contiguous array, in one vectorized loop."""
    flat = z.reshape(z.size)
    for j in range(flat.size):
        flat[j] = vexp(flat[j])


@register_jitable(inline="always")
def _softmax_grad(z, i, lab, inv_n, w):
    """Row i of z = e^(shifted logits): log of its sum; z[i] <- dz (softmax_xent's, times w)."""
    k = z.shape[1]
    s = z[i, 0] * 0
    for c in range(k):
        s += z[i, c]
    inv_s = 1 / s
    for c in range(k):
        z[i, c] = z[i, c] * inv_s * inv_n
    z[i, lab] = z[i, lab] - inv_n
    for c in range(k):
        z[i, c] = z[i, c] * w
    return np.log(s)


@rule(NEVER_PARALLEL)
def softmax_xent():
    """Row-wise softmax cross-entropy on logits z with integer labels y (fused backward).

    The loss of a row is ``log sum_c e^(z_c - m) - (z_y - m)`` with ``m`` its largest
    logit; the exponentials of the whole batch are one vectorized loop (:func:`vexp`).
    """

    def softmax_xent(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        one = as_dtype_of(1.0, z)
        rows = z.shape[0]
        for r in range(rows):
            loss[r] = _softmax_shift(z, r, y[r])
        _exp_all(z)
        for r in range(rows):
            loss[r] += _softmax_grad(z, r, y[r], inv_n, one)

    return softmax_xent


@rule(NEVER_PARALLEL)
def bce_logits():
    """Binary cross-entropy on logits z with targets y in [0, 1] (fused backward)."""

    def bce_logits(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        zero = as_dtype_of(0.0, z)
        one = as_dtype_of(1.0, z)
        for i in prange(z.size):
            x = z[i]
            t = y[i]
            e = vexp(-abs(x))  # e^-x or e^x: never overflows
            loss[i] = max(x, x * zero) - x * t + vlog1p_unit(e)
            if x >= 0:
                s = one / (one + e)
            else:
                s = e / (one + e)
            z[i] = (s - t) * inv_n

    return bce_logits


@rule(NEVER_PARALLEL)
def mse():
    """Squared error (z - y)^2; z <- 2 (z - y) inv_n."""

    def mse(y, inv_n, z, loss):
        inv_n = as_dtype_of(inv_n, z)
        two = as_dtype_of(2.0, z)
        for i in prange(z.size):
            r = z[i] - y[i]
            loss[i] = r * r
            z[i] = two * r * inv_n

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


@register_jitable(inline="always")
def _add_scaled_rows(out, o, src, at, vals, lo, hi):
    """out[o, :] <- sum of vals[j] * src[at[j], :] over j in [lo, hi), in order of j.

    Four entries are added per pass over the output row, so it is loaded and stored a
    quarter as often (the CSR products' inner loop; the sum's order is fixed).
    """
    cols = out.shape[1]
    zero = as_dtype_of(0.0, out)
    if cols == 1:  # a vector (LSQR's products): the same sums, in a register
        acc = zero
        j = lo
        while j + 4 <= hi:
            acc += (vals[j] * src[at[j], 0] + vals[j + 1] * src[at[j + 1], 0]) + (
                vals[j + 2] * src[at[j + 2], 0] + vals[j + 3] * src[at[j + 3], 0])
            j += 4
        while j < hi:
            acc += vals[j] * src[at[j], 0]
            j += 1
        out[o, 0] = acc
        return
    for c in range(cols):
        out[o, c] = zero
    j = lo
    while j + 4 <= hi:
        v0 = vals[j]
        v1 = vals[j + 1]
        v2 = vals[j + 2]
        v3 = vals[j + 3]
        k0 = at[j]
        k1 = at[j + 1]
        k2 = at[j + 2]
        k3 = at[j + 3]
        for c in range(cols):
            out[o, c] += (v0 * src[k0, c] + v1 * src[k1, c]) + (v2 * src[k2, c]
                                                                 + v3 * src[k3, c])
        j += 4
    while j < hi:
        v0 = vals[j]
        k0 = at[j]
        for c in range(cols):
            out[o, c] += v0 * src[k0, c]
        j += 1


#: Multiply-adds (stored entries x output columns) from which the CSR products run on every
#: thread (``launch_sized``): an MNIST batch (200 rows, 30k entries, 100 columns) took
#: 312-335 / 149-159 us (X W) and 444-466 / 346-440 us (X^T D) on one / two threads here.
CSR_THRESHOLD = 1 << 16


@rule(CSR_THRESHOLD)
def dense_to_csr():
    """The nonzeros of a dense 2-D ``x`` in CSR form, row by row, but dense columns apart.

    Columns ``c`` with ``dense_at[c] >= 0`` are copied whole (zeros too) into column
    ``dense_at[c]`` of ``dense``; the others' nonzeros (NaN included) go to ``indices`` and
    ``data``, in column order within each row, and ``indptr`` gets the rows' starts.
    ``indices`` and ``data`` have room for every nonzero of ``x``. Rows are split between
    the threads (a count, the starts summed, a fill): one pass over ``x`` per phase where
    NumPy's ``nonzero`` and boolean indexing took four (MNIST-5k: 14.4 ms for the CSR
    arrays alone).
    """

    def dense_to_csr(x, dense_at, indptr, indices, data, dense):
        rows, cols = x.shape
        for r in prange(rows):
            k = 0
            for c in range(cols):
                if x[r, c] != 0 and dense_at[c] < 0:
                    k += 1
            indptr[r + 1] = k
        indptr[0] = 0
        for r in range(rows):
            indptr[r + 1] += indptr[r]
        for r in prange(rows):
            k = indptr[r]
            for c in range(cols):
                v = x[r, c]
                at = dense_at[c]
                if at >= 0:
                    dense[r, at] = v
                elif v != 0:
                    indices[k] = c
                    data[k] = v
                    k += 1

    return dense_to_csr


@rule(CSR_THRESHOLD)
def csr_matmul():
    """out[i] <- X[rows[i]] W for X in CSR form (indptr, indices, data): a sparse first layer.

    ``rows`` picks the rows of X (a mini-batch, without copying it). Rows are independent
    (split between the threads), and each sums the row's entries in order
    (:func:`_add_scaled_rows`) whatever the threads.
    """

    def csr_matmul(indptr, indices, data, rows, w, out):
        for i in prange(out.shape[0]):
            r = rows[i]
            _add_scaled_rows(out, i, w, indices, data, indptr[r], indptr[r + 1])

    return csr_matmul


@rule(CSR_THRESHOLD)
def csr_tmatmul():
    """out <- X[rows]^T D for X in CSR form: the sparse first layer's weight gradient.

    The batch's entries are first sorted by feature (a counting sort into ``starts``,
    ``batch_rows``, ``values``: scratch of ``features + 1`` and at least the batch's
    entry count; ``sort`` 0 reuses the order a previous call left there for the same rows),
    so each output row is summed in place (:func:`_add_scaled_rows`) and
    written once (scattering row by row re-reads and re-writes an output row per
    entry: 512-558 against 413-466 us for an MNIST batch here, serially; the sort is serial,
    so two threads gain less than on X W). Output rows are independent (split
    between the threads) and each sums its entries in batch-row order: the same bits on
    any thread count.
    """

    def csr_tmatmul(indptr, indices, data, rows, d, sort, out, starts, batch_rows, values):
        features = out.shape[0]
        if sort:
            for k in range(features + 1):
                starts[k] = 0
            for i in range(rows.size):
                r = rows[i]
                for j in range(indptr[r], indptr[r + 1]):
                    starts[indices[j] + 1] += 1
            for k in range(features):
                starts[k + 1] += starts[k]
            for i in range(rows.size):  # starts[k] runs up to the end of feature k's entries
                r = rows[i]
                for j in range(indptr[r], indptr[r + 1]):
                    k = indices[j]
                    at = starts[k]
                    batch_rows[at] = i
                    values[at] = data[j]
                    starts[k] = at + 1
            for k in range(features, 0, -1):  # back to the starts
                starts[k] = starts[k - 1]
            starts[0] = 0
        for k in prange(features):
            _add_scaled_rows(out, k, d, batch_rows, values, starts[k], starts[k + 1])

    return csr_tmatmul


@register_jitable(inline="always")
def _logits(x, wt, b, r, pair, z):
    """z[i, c] <- b[c] + x[r + i] . wt[c] for i < 1 + pair (wt: the weights, transposed).

    Two rows at a time share each load of ``wt`` (a fifth faster here than one).
    """
    d = x.shape[1]
    for c in range(wt.shape[0]):
        s0 = x[r, 0] * 0
        if pair:
            s1 = s0
            for j in range(d):
                w = wt[c, j]
                s0 += x[r, j] * w
                s1 += x[r + 1, j] * w
            z[1, c] = s1 + b[c]
        else:
            for j in range(d):
                s0 += x[r, j] * wt[c, j]
        z[0, c] = s0 + b[c]


@register_jitable(inline="always")
def _accumulate(x, r, pair, dz, g):
    """g[c, :] += dz[i, c] * x[r + i, :] for every output c, i < 1 + pair."""
    d = x.shape[1]
    for c in range(g.shape[0]):
        f0 = dz[0, c]
        if pair:
            f1 = dz[1, c]
            for j in range(d):
                g[c, j] += f0 * x[r, j] + f1 * x[r + 1, j]
        else:
            for j in range(d):
                g[c, j] += f0 * x[r, j]


@register_jitable(inline="always")
def _flush(g, out_g):
    """out_g += g (float64 partial sums); g <- 0."""
    for c in range(g.shape[0]):
        for j in range(g.shape[1]):
            out_g[c, j] += g[c, j]
            g[c, j] = 0


@register_jitable(inline="always")
def _argmax_row(z, i):
    """The first largest entry of row i."""
    best = 0
    for c in range(1, z.shape[1]):
        if z[i, c] > z[i, best]:
            best = c
    return best


@register_jitable(inline="always")
def _bce_row(z, i, y, r, inv_n, w):
    """Row i of logits z (targets y[r]): (its loss sum, correct signs); z[i] <- dz."""
    one = as_dtype_of(1.0, z)
    zero = as_dtype_of(0.0, z)
    lr = 0.0
    hits = 0
    # the loss, summed in a loop that only reads (one that also stored dz would get the
    # vectorizer's run-time overlap check, whose two outcomes sum in different orders)
    for c in range(z.shape[1]):
        v = z[i, c]
        tc = y[r, c]
        if (v > zero and tc == one) or (not v > zero and tc == zero):
            hits += 1
        lr += float(max(v, v * 0) - v * tc + vlog1p_unit(vexp(-abs(v))))
    for c in range(z.shape[1]):
        v = z[i, c]
        e = vexp(-abs(v))
        if v >= 0:
            s = one / (one + e)
        else:
            s = e / (one + e)
        z[i, c] = (s - y[r, c]) * inv_n * w
    return lr, hits


@rule(LINEAR_THRESHOLD, fastmath=frozenset({"reassoc", "contract"}))
def linear_xent(softmax):
    """A linear model's cross-entropy and its gradients, in one pass over X.

    For every row: logits ``z = x W + b`` (``wt`` is ``W`` transposed, ``(k, d)``), the
    loss and ``dz`` as the loss kernels and ``rowscale`` compute them, then
    ``dW += x^T dz`` and ``db += dz``. ``softmax``: the softmax cross-entropy with integer
    labels ``y`` (``log sum exp z - z[y]``, ``dz = (softmax(z) - onehot(y)) inv_n w``);
    otherwise the binary cross-entropy of each logit (binary and multilabel: ``y`` is
    ``(rows, k)`` of 0 / 1 targets, ``max(z, 0) - z y + log1p(exp(-|z|))``,
    ``dz = (sigmoid(z) - y) inv_n w``). X is read once, where ``X W`` and ``X^T dZ`` by
    BLAS read it twice.

    The rows are split into ``loss.size`` chunks (one per thread at most); chunk ``t``
    writes its float64 partial sums to ``gt[t]`` (``(k, d)``), ``gb[t]``, ``loss[t]`` (the
    weighted loss sum) and ``correct[t]`` (softmax: rows whose largest logit is the label,
    first on ties; else outputs whose sign matches the target), with ``zbuf[t]``
    (``(2, k)``) and ``gbuf[t]`` (``(k, d)``, in ``x``'s dtype) as its scratch. ``sw``:
    the rows' weights, or empty for weight 1. The launch size is rows x d x k
    (multiply-adds per pass).
    """

    def linear_xent(x, wt, b, y, sw, inv_n, zbuf, gbuf, gt, gb, correct, loss):
        inv_n = as_dtype_of(inv_n, x)
        rows = x.shape[0]
        k = wt.shape[0]
        chunks = loss.size
        for t in prange(chunks):
            lo = rows * t // chunks
            hi = rows * (t + 1) // chunks
            z = zbuf[t]
            g = gbuf[t]
            g[:, :] = 0
            gt[t, :, :] = 0
            gb[t, :] = 0
            total = 0.0
            hits = 0
            r = lo
            while r < hi:
                pair = r + 1 < hi
                n = 2 if pair else 1
                _logits(x, wt, b, r, pair, z)
                neg_zy0 = neg_zy1 = total * 0
                if softmax:  # both rows' exponentials in one loop
                    for i in range(n):
                        if _argmax_row(z, i) == y[r + i]:
                            hits += 1
                        v = float(_softmax_shift(z, i, y[r + i]))
                        if i:
                            neg_zy1 = v
                        else:
                            neg_zy0 = v
                    _exp_all(z[:n])
                for i in range(n):
                    w = as_dtype_of(sw[r + i], x) if sw.size else as_dtype_of(1.0, x)
                    if softmax:
                        lr = float(_softmax_grad(z, i, y[r + i], inv_n, w)
                                   + (neg_zy1 if i else neg_zy0))
                    else:
                        lr, h = _bce_row(z, i, y, r + i, inv_n, w)
                        hits += h
                    total += lr * sw[r + i] if sw.size else lr
                    for c in range(k):
                        gb[t, c] += z[i, c]
                _accumulate(x, r, pair, z, g)
                r += n
                if (r - lo) % LINEAR_BLOCK < n:
                    _flush(g, gt[t])
            _flush(g, gt[t])
            loss[t] = total
            correct[t] = hits

    return linear_xent
