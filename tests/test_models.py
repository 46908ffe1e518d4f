"""Models: finite-difference gradient checks, a hand-worked step, errors, no allocation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastgd
from fastgd import _backend
from fastgd.models import ACTIVATIONS, MLP, LinearRegression, LogisticRegression
from fastgd.models.activations import act_grad_, act_grad_colsum_, activate
from fastgd.models.losses import loss_and_grad
from tests.helpers import assert_unchanged, linear_case, snapshot

H = 1e-6


def _fd_check(model, X, y, rtol=2e-5, atol=1e-8, sample_weight=None):
    model.loss_and_grad(X, y, sample_weight)
    analytic = [g.copy() for g in model.grads]
    for p, ga in zip(model.params, analytic):
        num = np.empty_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + H
            lp = model.loss(X, y, sample_weight)
            p[i] = old - H
            lm = model.loss(X, y, sample_weight)
            p[i] = old
            num[i] = (lp - lm) / (2 * H)
        np.testing.assert_allclose(ga, num, rtol=rtol, atol=atol)


def _data(n=7, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d))


def _targets(output, loss, k, rng):
    if output == "multiclass":
        return rng.integers(0, k, size=7)
    if output == "binary":
        return rng.integers(0, 2, size=7).astype(float)
    if output == "multilabel":
        return rng.integers(0, 2, size=(7, k)).astype(float)
    if loss == "poisson":
        return rng.poisson(1.5, size=(7, k)).astype(float)
    return rng.normal(size=(7, k)) * 2


OUTPUTS = [("regression", "mse", 2), ("regression", "huber", 2),
           ("regression", "squared_error", 2), ("regression", "poisson", 2),
           ("binary", None, 1), ("multilabel", None, 3), ("multiclass", None, 3)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(("output", "loss", "k"), OUTPUTS)
@pytest.mark.parametrize(("l2", "l1"), [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2)])
def test_mlp_gradient_matches_finite_differences(activation, output, loss, k, l2, l1):
    X = _data()
    y = _targets(output, loss, k, np.random.default_rng(1))
    model = MLP([3, 5, 4, k], activation=activation, output=output, loss=loss, l2=l2, l1=l1,
                dtype=np.float64, seed=2, huber_delta=0.5, init="xavier_normal")
    _fd_check(model, X, y)


@pytest.mark.parametrize(("output", "loss", "k"), OUTPUTS)
def test_sample_weights_weigh_rows(output, loss, k):
    X = _data()
    rng = np.random.default_rng(3)
    y = _targets(output, loss, k, rng)
    w = rng.uniform(0.0, 3.0, 7)
    w[2] = 0.0
    model = MLP([3, 4, k], activation="tanh", output=output, loss=loss, l2=0.1,
                dtype=np.float64, seed=2)
    _fd_check(model, X, y, sample_weight=w)
    # integer weights are repeated rows
    reps = np.array([2, 1, 0, 3, 1, 1, 2])
    weighted = model.loss_and_grad(X, y, reps.astype(float))
    g_weighted = [g.copy() for g in model.grads]
    repeated = model.loss_and_grad(np.repeat(X, reps, axis=0), np.repeat(y, reps, axis=0))
    assert weighted == pytest.approx(repeated, rel=1e-12)
    for a, b in zip(g_weighted, model.grads):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    before = snapshot(list(model.params))
    for bad, match in [(np.ones(6), "shape"), (-w, ">= 0"), (np.full(7, np.nan), "finite")]:
        with pytest.raises(ValueError, match=match):
            model.loss_and_grad(X, y, bad)
    assert_unchanged(before, list(model.params))


@pytest.mark.parametrize(("output", "loss", "k"), OUTPUTS)
def test_sparse_inputs_equal_dense(output, loss, k):
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(7, 5)) * (rng.random((7, 5)) < 0.4)
    y = _targets(output, loss, k, rng)
    model = MLP([5, 4, k], activation="relu", output=output, loss=loss, l2=0.1,
                dtype=np.float64, seed=2)
    dense = model.loss_and_grad(X, y)
    g_dense = [g.copy() for g in model.grads]
    for fmt in (sp.csr_matrix, sp.csc_matrix, sp.csr_array):
        assert model.loss_and_grad(fmt(X), y) == pytest.approx(dense, rel=1e-13)
        for a, b in zip(g_dense, model.grads):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(model.forward(fmt(X)), model.forward(X), rtol=1e-13)


def test_linear_and_logistic_gradients():
    X = _data()
    rng = np.random.default_rng(3)
    _fd_check(LinearRegression(3, 2, dtype=np.float64, seed=0), X, rng.normal(size=(7, 2)))
    _fd_check(LogisticRegression(3, dtype=np.float64, seed=0), X,
              rng.integers(0, 2, size=7))
    _fd_check(LogisticRegression(3, 4, dtype=np.float64, seed=0, l2=0.1), X,
              rng.integers(0, 4, size=7))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_matches_finite_differences(name):
    z = np.random.default_rng(0).normal(size=(4, 5)) * 2
    a = activate(z, name, alpha=0.1)
    d = np.ones_like(z)
    act_grad_(z.copy(), a, d, name, alpha=0.1)
    num = (activate(z + H, name, 0.1) - activate(z - H, name, 0.1)) / (2 * H)
    np.testing.assert_allclose(d, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fused_derivative_and_bias_gradient_equal_the_two_kernels(name, dtype):
    # act_grad_colsum is act_grad then colsum in one pass: the same bits, NaN and -0.0 kept
    from fastgd import _backend

    rng = np.random.default_rng(4)
    z = (rng.normal(size=(37, 9)) * 3).astype(dtype)
    z[0, :3] = [np.nan, -0.0, np.inf]
    a = activate(z, name, alpha=0.1)
    d0 = rng.normal(size=z.shape).astype(dtype)
    d_two, d_one = d0.copy(), d0.copy()
    want, got = np.full(9, 7.0, dtype), np.full(9, 7.0, dtype)
    act_grad_(z, a, d_two, name, alpha=0.1)
    _backend.launch("nn", "colsum", (), d_two, want)
    act_grad_colsum_(z, a, d_one, got, name, alpha=0.1)
    np.testing.assert_array_equal(d_one, d_two)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got[3:]).all() and (name == "identity" or not np.array_equal(d_one, d0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_l2_gradient_and_penalty_equal_axpy_and_sumsq(dtype):
    from fastgd import _backend

    rng = np.random.default_rng(5)
    w = rng.normal(size=1001).astype(dtype)
    g0 = rng.normal(size=1001).astype(dtype)
    g_two, g_one = g0.copy(), g0.copy()
    _backend.launch("axpy", "axpy", (), w, 0.3, g_two)
    out = np.array([2.5])  # the kernel adds to what is there
    _backend.launch("nn", "l2_grad", (), w, 0.3, g_one, out)
    np.testing.assert_array_equal(g_one, g_two)
    want = 2.5 + float(np.sum(w.astype(np.float64) ** 2))
    assert out[0] == pytest.approx(want, rel=1e-14)


def test_model_penalty_from_the_backward_pass_equals_the_separate_sum():
    X = _data()
    y = np.random.default_rng(6).integers(0, 3, size=7)
    model = MLP([3, 5, 4, 3], output="multiclass", l2=0.3, l1=0.05, dtype=np.float64, seed=1)
    with_grad = model.loss_and_grad(X, y)
    assert with_grad == pytest.approx(model.loss(X, y), rel=1e-15)
    w2 = sum(float(np.sum(w ** 2)) for w in model.params[0::2])
    w1 = sum(float(np.sum(np.abs(w))) for w in model.params[0::2])
    model.l2 = model.l1 = 0.0
    data = model.loss(X, y)
    assert with_grad == pytest.approx(data + 0.15 * w2 + 0.05 * w1, rel=1e-14)


def test_activations_known_values():
    z = np.array([[-2.0, 0.5]])
    np.testing.assert_allclose(activate(z, "sigmoid"), 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(activate(z, "softplus"), np.log1p(np.exp(z)))
    np.testing.assert_allclose(activate(z, "leaky_relu", 0.1), [[-0.2, 0.5]])
    np.testing.assert_allclose(activate(z, "tanh"), np.tanh(z))
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(
        activate(z, "gelu"),
        torch.nn.functional.gelu(torch.tensor(z), approximate="tanh").numpy(), rtol=1e-12)


@pytest.mark.parametrize(("name", "y"), [
    ("mse", np.array([[0.5, -1.0], [2.0, 0.0]])),
    ("huber", np.array([[0.5, -1.0], [2.0, 3.0]])),
    ("bce", np.array([[1.0], [0.0]])),
    ("softmax_xent", np.array([2, 0])),
])
def test_losses_match_finite_differences_and_torch(name, y):
    torch = pytest.importorskip("torch")
    k = 3 if name == "softmax_xent" else (1 if name == "bce" else 2)
    z = np.random.default_rng(0).normal(size=(2, k)) * 3
    loss, g = loss_and_grad(name, z, y)
    num = np.empty_like(z)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += H
        zm[i] -= H
        num[i] = (loss_and_grad(name, zp, y)[0] - loss_and_grad(name, zm, y)[0]) / (2 * H)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)
    tz, ty = torch.tensor(z), torch.tensor(y)
    expected = {
        "mse": lambda: torch.nn.functional.mse_loss(tz, ty),
        "huber": lambda: torch.nn.functional.huber_loss(tz, ty, delta=1.0),
        "bce": lambda: torch.nn.functional.binary_cross_entropy_with_logits(tz, ty),
        "softmax_xent": lambda: torch.nn.functional.cross_entropy(tz, ty),
    }[name]()
    assert loss == pytest.approx(float(expected), rel=1e-12)


def test_softmax_xent_is_stable_for_huge_logits():
    loss, g = loss_and_grad("softmax_xent", np.array([[1000.0, -1000.0]]), np.array([0]))
    assert loss == 0.0 and np.isfinite(g).all()
    loss, g = loss_and_grad("bce", np.array([[800.0]]), np.array([[0.0]]))
    assert loss == pytest.approx(800.0) and np.isfinite(g).all()


#: The kernels' vectorizable math (kernels/cpu/nn.py): its reference and its bound in ulp.
VECTOR_MATH = {"vexp": (np.exp, 1), "vtanh": (np.tanh, 1), "vlog1p_unit": (np.log1p, 2)}


def _math_inputs(name, rng):
    if name == "vexp":
        return [np.linspace(-800, 800, 400_001), rng.uniform(-110, 100, 200_000),
                rng.normal(0, 1, 200_000), [np.nan, np.inf, -np.inf, 0.0, -0.0]]
    if name == "vtanh":
        tiny = 10.0 ** rng.uniform(-300, 0, 100_000) * rng.choice([-1.0, 1.0], 100_000)
        return [np.linspace(-25, 25, 400_001), rng.normal(0, 0.5, 200_000), tiny,
                [0.55, -0.55, np.nextafter(0.55, 0), 5e-324, np.nan, np.inf, -np.inf, 0.0,
                 -0.0]]
    return [np.linspace(0, 1, 400_001), 10.0 ** rng.uniform(-320, 0, 200_000),
            [0.0, 1.0, 5e-324, np.nan]]  # vlog1p_unit: e^-|z| in [0, 1]


_MATH_BITS = """
import hashlib, sys
import numpy as np
from numba import njit
from fastgd import _backend
from fastgd.kernels.cpu import nn
if sys.argv[1] == "linear first":  # the one-pass kernel (reassoc, contract) compiled first
    rows, d, k = 4, 3, 9
    for softmax in (True, False):
        y = np.zeros(rows, np.int64) if softmax else np.zeros((rows, k))
        _backend.launch_sized(rows * d * k, "nn", "linear_xent", (("softmax", softmax),),
                              np.ones((rows, d)), np.ones((k, d)), np.ones(k), y, np.empty(0),
                              1.0, np.zeros((1, 2, k)), np.zeros((1, k, d)),
                              np.empty((1, k, d)), np.empty((1, k)), np.empty(1), np.empty(1))
x = np.random.default_rng(0).standard_normal(20_000) * 6
digest = hashlib.sha256()
for fn in (nn.vexp, nn.vtanh, nn.vlog1p_unit):
    @njit
    def each(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])
    for dtype in (np.float64, np.float32):
        xs = (np.abs(x) / 6 if fn is nn.vlog1p_unit else x).astype(dtype)
        out = np.empty_like(xs)
        each(xs, out)
        digest.update(out.tobytes())
print(digest.hexdigest())
"""


def test_the_math_functions_do_not_depend_on_which_kernel_compiled_first(tmp_path):
    # a called function takes its first caller's fast-math flags unless its own are set:
    # the math functions' results must be the same whichever kernel a process compiled
    # first (fresh disk caches: nothing loaded)
    import os
    import subprocess
    import sys

    out = []
    for order in ("linear first", "math first"):
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / order.replace(" ", "_")))
        proc = subprocess.run([sys.executable, "-c", _MATH_BITS, order], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        out.append(proc.stdout.strip())
    assert len(out[0]) == 64 and out[0] == out[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(VECTOR_MATH))
def test_vectorized_math_is_within_its_bound_of_the_exact_value(name, dtype):
    from fastgd.kernels.cpu import nn
    from numba import njit

    fn = getattr(nn, name)
    reference, ulps = VECTOR_MATH[name]

    @njit
    def each(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    x = np.concatenate(_math_inputs(name, np.random.default_rng(0))).astype(dtype)
    out = np.empty_like(x)
    each(x, out)
    # the exact value rounded once: float64 through long double, float32 through float64
    wide = np.longdouble if dtype == np.float64 else np.float64
    with np.errstate(over="ignore"):
        want = reference(x.astype(wide)).astype(dtype)
    nan = np.isnan(x)
    assert np.isnan(out[nan]).all()
    edge = ~nan & (~np.isfinite(want) | (want == 0))  # 0, inf, underflow, overflow
    assert (out[edge] == want[edge]).all()
    assert (np.signbit(out) == np.signbit(want))[~nan].all()  # -0.0 stays -0.0
    ok = ~nan & ~edge
    err = np.abs(out - want)[ok]
    assert (err <= ulps * np.spacing(np.abs(want[ok]))).all()
    assert (err == 0).mean() > 0.6 and err.max() > 0  # mostly exact; not the reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_xent_batch_matches_the_float64_formula(dtype):
    rng = np.random.default_rng(1)
    z = (rng.normal(size=(256, 10)) * 5).astype(dtype)
    y = rng.integers(0, 10, 256)
    loss, g = loss_and_grad("softmax_xent", z, y)
    zz = z.astype(np.float64)
    m = zz.max(axis=1, keepdims=True)
    e = np.exp(zz - m)
    s = e.sum(axis=1, keepdims=True)
    want = (e / s - np.eye(10)[y]) / 256
    eps = float(np.finfo(dtype).eps)
    assert g.dtype == dtype
    np.testing.assert_allclose(g, want, rtol=0, atol=4 * eps / 256)
    want_loss = np.mean(np.log(s[:, 0]) + m[:, 0] - zz[np.arange(256), y])
    assert loss == pytest.approx(want_loss, rel=8 * eps)


def test_float32_model_kernels_compute_in_float32():
    # an int literal or a float64 scalar in a float32 loop makes Numba compute in float64
    # (half the SIMD width): the relu derivative's `x * 0` ran at half speed that way
    from fastgd.kernels.codes import ACT_CODES
    from fastgd.kernels.cpu import nn
    from numba import njit, types

    m, v = types.Array(types.float32, 2, "C"), types.Array(types.float32, 1, "C")
    f64 = types.float64
    cases = [(nn.bias_act, {"act": c}, (v, f64, m, m)) for c in ACT_CODES.values()]
    cases += [(nn.act_grad, {"act": c}, (m, m, f64, m)) for c in ACT_CODES.values()]
    cases += [(nn.act_grad_colsum, {"act": c}, (m, m, f64, m, v)) for c in ACT_CODES.values()]
    cases += [(getattr(nn, n), {}, (v, f64, v, v)) for n in ("mse", "bce_logits", "poisson")]
    cases += [(nn.huber, {}, (v, f64, f64, v, v))]
    for rule, flags, sig in cases:
        fn = njit(error_model="numpy")(rule._factory(**flags))
        fn.compile(sig)
        assert "fpext" not in fn.inspect_llvm(sig), (rule.__name__, flags)


def test_hand_worked_linear_regression_step():
    # y = X w + b with w = 0, b = 0: loss = mean(y^2) = (1 + 4) / 2 = 2.5,
    # dL/dw = 2/N X^T (0 - y) = -(1*1 + 2*3) = -7, dL/db = -(1 + 2) = -3.
    model = LinearRegression(1, dtype=np.float64, init="zeros")
    X, y = np.array([[1.0], [3.0]]), np.array([1.0, 2.0])
    assert model.loss_and_grad(X, y) == 2.5
    np.testing.assert_array_equal(model.grads[0], [[-7.0]])
    np.testing.assert_array_equal(model.grads[1], [-3.0])
    fastgd.SGD(model.flat, lr=0.1).step()
    np.testing.assert_allclose(model.params[0], [[0.7]])
    np.testing.assert_allclose(model.params[1], [0.3])


def test_training_reduces_loss_and_predicts():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    model = MLP([4, 16, 3], output="multiclass", seed=0)
    opt = fastgd.Adam(model.flat, lr=0.02)
    for _ in range(200):
        model.loss_and_grad(X, y)
        opt.step()
    assert (model.predict(X) == y).mean() > 0.9
    p = model.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_no_allocation_after_the_first_call_at_a_batch_size():
    X = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, size=512)
    model = MLP([64, 128, 10], output="multiclass", seed=0, l2=1e-4)
    model.loss_and_grad(X, y)
    tracemalloc.start()
    model.loss_and_grad(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16_384  # the activations alone are 512 x 128 x 4 = 256 KiB


@pytest.mark.parametrize(("X", "y", "exc", "match"), [
    (np.ones((3, 5)), np.zeros(3, np.int64), ValueError, r"X must have shape \(n, 4\)"),
    (np.ones((3, 4)), np.zeros(2, np.int64), ValueError, "3 integer class labels"),
    (np.ones((3, 4)), np.array([0, 1, 3]), ValueError, r"class labels must be in \[0, 3\)"),
    (np.ones((3, 4)), np.zeros(3), ValueError, "integer class labels"),
])
def test_bad_inputs_raise_and_change_nothing(X, y, exc, match):
    model = MLP([4, 5, 3], output="multiclass", seed=0, dtype=np.float64)
    before = snapshot(list(model.params) + list(model.grads))
    with pytest.raises(exc, match=match):
        model.loss_and_grad(X, y)
    assert_unchanged(before, list(model.params) + list(model.grads))


def test_model_construction_errors():
    with pytest.raises(ValueError, match="layer_sizes"):
        MLP([4])
    with pytest.raises(ValueError, match="unknown activation"):
        MLP([4, 2], activation="swish")
    with pytest.raises(ValueError, match="does not fit output"):
        MLP([4, 2], output="multiclass", loss="mse")
    with pytest.raises(ValueError, match="binary model has 1 output"):
        MLP([4, 2], output="binary")
    with pytest.raises(ValueError, match="unknown initializer"):
        MLP([4, 2], init="orthogonal")
    with pytest.raises(ValueError, match="n_classes"):
        LogisticRegression(3, n_classes=1)
    with pytest.raises(ValueError, match="binary targets"):
        LogisticRegression(2).loss_and_grad(np.ones((2, 2)), np.array([0.0, 2.0]))


# -- the one-pass kernel of models without hidden layers ----------------------------------

def _two_pass(model, X, y, w, monkeypatch):
    """loss, gradients and correct count by BLAS's two passes (the hidden-layer path)."""
    with monkeypatch.context() as m:
        m.setattr(MLP, "_one_pass", lambda self, X: False)
        correct = np.zeros(1)
        loss = model._loss_and_grad(X, y, w, correct)
    return loss, [g.copy() for g in model.grads], correct[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("output", "k"), [("multiclass", 7), ("binary", 1), ("multilabel", 4)])
def test_one_pass_linear_kernel_equals_the_two_pass_path(output, k, weighted, dtype,
                                                         monkeypatch):
    # 1301 rows: five chunks of 260-261 rows, each ending on an unpaired row
    model, X, y, w = linear_case(output, k, 1301, 40, dtype)
    X, y = model._prepare(X, y)
    w = model._check_weights(w if weighted else None, X.shape[0])
    with _backend.all_parallel_kernels():
        assert model._one_pass(X)
        correct = np.zeros(1)
        loss = model._loss_and_grad(X, y, w, correct)
        got = [g.copy() for g in model.grads]
        want_loss, want, want_correct = _two_pass(model, X, y, w, monkeypatch)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert loss == pytest.approx(want_loss, rel=rtol)
    for g, h in zip(got, want):
        np.testing.assert_allclose(g, h, rtol=rtol, atol=rtol * np.abs(h).max())
    assert correct[0] == want_correct > 0


def test_one_pass_linear_kernel_is_the_gradient():
    # the finite-difference check of the kernel itself (float64, weights, l1 and l2)
    model, X, y, w = linear_case("multiclass", 3, 600, 2, np.float64)
    with _backend.all_parallel_kernels():
        assert model._one_pass(model._check_X(X))
        _fd_check(model, X, y, sample_weight=w)


def test_one_pass_linear_kernel_does_not_depend_on_the_thread_count():
    import numba

    model, X, y, _ = linear_case("multiclass", 10, 3000, 50, np.float64)
    threads = numba.get_num_threads()
    results = []
    try:
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            with _backend.all_parallel_kernels():
                loss = model.loss_and_grad(X, y)
            results.append((loss, model.flat.grad_buffers[np.dtype(np.float64)].copy()))
    finally:
        numba.set_num_threads(threads)
    assert all(r[0] == results[0][0] for r in results)
    assert all(np.array_equal(r[1], results[0][1]) for r in results)


def test_one_pass_is_chosen_only_where_it_runs_on_every_thread():
    model, X, _, _ = linear_case("multiclass", 10, 4000, 100, np.float64)
    assert model._one_pass(X)  # 4e6 multiply-adds over 15 chunks
    assert not model._one_pass(X[:256])  # one chunk: BLAS is faster on one thread
    with fastgd.serial_kernels():  # fit's mini-batches
        assert not model._one_pass(X)
    small = MLP([3, 2], output="multiclass")
    assert not small._one_pass(np.zeros((4000, 3), np.float32))  # 24k multiply-adds


def test_one_pass_linear_kernel_allocates_nothing_after_the_first_call():
    model, X, y, _ = linear_case("multiclass", 10, 2048, 64, np.float32)
    X, y = model._prepare(X, y)
    with _backend.all_parallel_kernels():
        model._loss_and_grad(X, y)
        tracemalloc.start()
        model._loss_and_grad(X, y)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 16_384  # the logits alone would be 2048 x 10 x 4 = 80 KiB


def _mostly_zero(n, d, density, rng, dtype=np.float64):
    X = rng.normal(size=(n, d)) * (rng.random((n, d)) < density)
    X[::7] = 0.0  # empty rows too
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cols", [1, 7, 100])
def test_csr_products_equal_dense_products_on_any_rows(dtype, cols):
    from fastgd.models.mlp import _CSR

    rng = np.random.default_rng(5)
    X = _mostly_zero(300, 40, 0.2, rng, dtype)
    w = rng.normal(size=(40, cols)).astype(dtype)
    rows = np.concatenate([rng.permutation(300)[:90], [3, 3, 7]])  # repeats, empty rows
    whole = _CSR.from_dense(X)
    empty = whole.take(np.array([0, 7, 14]))  # no entries: the sort's scratch starts empty
    empty.tmatmul(np.ones((3, cols), dtype), np.empty((40, cols), dtype))
    A = whole.take(rows)  # shares (and grows) that scratch
    d = rng.normal(size=(rows.size, cols)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    results = []
    for mode in (fastgd.serial_kernels, _backend.all_parallel_kernels):
        out, gw = np.full((rows.size, cols), np.nan, dtype), np.full((40, cols), np.nan, dtype)
        with mode():
            A.matmul(w, out)
            A.tmatmul(d, gw)
        np.testing.assert_allclose(out, X[rows] @ w, rtol=tol, atol=tol)
        np.testing.assert_allclose(gw, X[rows].T @ d, rtol=tol, atol=tol)
        results.append((out, gw))
    # one build or the other, the same bits: each sum runs in one order
    assert all(np.array_equal(a, b) for a, b in zip(*results))


def _dense_columns_case(rng, dtype=np.float64, n=300, dense=40, sparse=60):
    """``dense`` columns 60 % nonzero among ``sparse`` ones 5 % nonzero, and empty rows."""
    density = np.r_[np.full(dense, 0.6), np.full(sparse, 0.05)][rng.permutation(dense + sparse)]
    X = rng.normal(size=(n, dense + sparse)) * (rng.random((n, dense + sparse)) < density)
    X[::7] = 0.0
    return X.astype(dtype), np.flatnonzero(density > 0.5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cols", [1, 7, 100])
def test_csr_products_with_dense_columns_equal_dense_products(dtype, cols):
    from fastgd.models.mlp import _CSR

    rng = np.random.default_rng(11)
    X, dense = _dense_columns_case(rng, dtype)
    whole = _CSR.from_dense(X).with_dense_columns()
    direct = _CSR.from_dense(X, dense_columns=True)  # the same split, read from X
    for name in ("indptr", "indices", "data", "dense", "dense_cols"):
        np.testing.assert_array_equal(getattr(direct, name), getattr(whole, name))
    np.testing.assert_array_equal(whole.dense_cols, dense)  # the 60 % columns, no other
    np.testing.assert_array_equal(whole.dense, X[:, dense])
    rest = X.copy()
    rest[:, dense] = 0
    plain = _CSR.from_dense(rest)  # the CSR part holds exactly the other entries
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(plain, name))
    d_features = X.shape[1]
    w = rng.normal(size=(d_features, cols)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    rows_a = np.concatenate([rng.permutation(300)[:90], [3, 3, 7]])  # repeats, empty rows
    rows_b = rng.permutation(300)[:90]  # another batch of the same size: gathered anew
    for rows in (rows_a, rows_b, rows_a, np.arange(0)):
        part = whole.take(rows)
        d = rng.normal(size=(rows.size, cols)).astype(dtype)
        out, gw = np.full((rows.size, cols), np.nan, dtype), np.full((d_features, cols),
                                                                     np.nan, dtype)
        part.matmul(w, out)
        part.tmatmul(d, gw)
        np.testing.assert_allclose(out, X[rows] @ w, rtol=tol, atol=tol)
        np.testing.assert_allclose(gw, X[rows].T @ d, rtol=tol, atol=tol)
        assert part.dense is whole.dense
    out, gw, d = np.empty((300, cols), dtype), np.empty((d_features, cols), dtype), \
        rng.normal(size=(300, cols)).astype(dtype)
    whole.matmul(w, out)
    whole.tmatmul(d, gw)
    np.testing.assert_allclose(out, X @ w, rtol=tol, atol=tol)
    np.testing.assert_allclose(gw, X.T @ d, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_to_csr_keeps_every_nonzero_in_order_on_any_build(dtype, monkeypatch):
    from fastgd.models import mlp
    from fastgd.models.mlp import _CSR

    rng = np.random.default_rng(13)
    X, dense = _dense_columns_case(rng, dtype, n=400)
    X[1, :3] = [np.nan, -0.0, np.inf]  # NaN and inf are entries, -0.0 is a zero
    mask = X != 0
    results = []
    for mode in (fastgd.serial_kernels, _backend.all_parallel_kernels):
        with mode():
            A = _CSR.from_dense(X)
            B = _CSR.from_dense(X, dense_columns=True)
        np.testing.assert_array_equal(A.indptr[1:], np.cumsum(mask.sum(axis=1)))
        np.testing.assert_array_equal(A.indices, np.nonzero(mask)[1])
        np.testing.assert_array_equal(A.data, X[mask])
        assert A.dense is None and A.data.dtype == dtype
        np.testing.assert_array_equal(B.dense_cols, dense)
        np.testing.assert_array_equal(B.dense, X[:, dense])
        rest = mask.copy()
        rest[:, dense] = False
        np.testing.assert_array_equal(B.indptr[1:], np.cumsum(rest.sum(axis=1)))
        np.testing.assert_array_equal(B.indices, np.nonzero(rest)[1])
        np.testing.assert_array_equal(B.data, X[rest])
        results.append(B)
    monkeypatch.setattr(mlp, "DENSE_COLUMNS_MIN", dense.size + 1)  # too few: no split
    assert _CSR.from_dense(X, dense_columns=True).dense is None
    empty = _CSR.from_dense(np.zeros((0, 5), dtype), dense_columns=True)
    assert empty.shape == (0, 5) and empty.data.size == 0 and list(empty.indptr) == [0]


def test_dense_columns_need_enough_of_them_and_sum_duplicate_entries():
    sp = pytest.importorskip("scipy.sparse")
    from fastgd.models import mlp
    from fastgd.models.mlp import _CSR

    rng = np.random.default_rng(12)
    few, _ = _dense_columns_case(rng, dense=mlp.DENSE_COLUMNS_MIN - 1)
    A = _CSR.from_dense(few)
    assert A.with_dense_columns() is A and A.dense is None
    enough, dense = _dense_columns_case(rng, dense=mlp.DENSE_COLUMNS_MIN)
    B = _CSR.from_dense(enough).with_dense_columns()
    np.testing.assert_array_equal(B.dense_cols, dense)
    assert B.with_dense_columns() is B  # split once
    assert B.take(np.arange(5)).with_dense_columns().dense is B.dense  # a selection: as is
    # a column exactly at the threshold is dense; one entry below it is not
    X = np.zeros((10, 40))
    X[: int(mlp.DENSE_COLUMN_DENSITY * 10), :33] = 1.0
    X[: int(mlp.DENSE_COLUMN_DENSITY * 10) - 1, 33:] = 1.0
    assert list(_CSR.from_dense(X).with_dense_columns().dense_cols) == list(range(33))
    # SciPy input with a duplicate entry (row 0, column 1): summed, as the CSR kernels do
    m = sp.csr_matrix((np.arange(1.0, 8.0), np.array([1, 1, 0, 0, 2, 2, 1]),
                       np.array([0, 3, 5, 7])), shape=(3, 3))
    saved = mlp.DENSE_COLUMNS_MIN
    try:
        mlp.DENSE_COLUMNS_MIN = 1
        C = _CSR(m, np.dtype(np.float64)).with_dense_columns()
    finally:
        mlp.DENSE_COLUMNS_MIN = saved
    np.testing.assert_array_equal(C.dense_cols, [0, 1, 2])
    np.testing.assert_array_equal(C.dense, [[3.0, 3.0, 0.0], [4.0, 0.0, 5.0], [0.0, 7.0, 6.0]])
    assert C.data.size == 0


def test_csr_products_of_one_column_are_the_first_column_of_wider_ones():
    # a single column sums in a register, in the same order as the wider products' loop
    from fastgd.models.mlp import _CSR

    rng = np.random.default_rng(6)
    X = _mostly_zero(200, 30, 0.3, rng)
    A = _CSR.from_dense(X)
    w, d = rng.normal(size=(30, 3)), rng.normal(size=(200, 3))
    wide, gwide = np.empty((200, 3)), np.empty((30, 3))
    one, gone = np.empty((200, 1)), np.empty((30, 1))
    A.matmul(w, wide)
    A.matmul(np.ascontiguousarray(w[:, :1]), one)
    A.tmatmul(d, gwide)
    A.tmatmul(np.ascontiguousarray(d[:, :1]), gone)
    np.testing.assert_array_equal(one[:, 0], wide[:, 0])
    np.testing.assert_array_equal(gone[:, 0], gwide[:, 0])


def test_csr_weight_gradient_sorts_a_matrix_once_and_each_batch_anew(monkeypatch):
    from fastgd.models.mlp import _CSR

    rng = np.random.default_rng(8)
    X = _mostly_zero(120, 30, 0.3, rng)
    whole = _CSR.from_dense(X)
    sorts = []
    real = _backend.launch_sized

    def recording(size, module, name, *args):
        if name == "csr_tmatmul":
            sorts.append(args[6])  # the sort flag
        return real(size, module, name, *args)

    monkeypatch.setattr(_backend, "launch_sized", recording)
    out = np.empty((30, 4))
    for _ in range(3):  # L-BFGS's evaluations: one sort
        d = rng.normal(size=(120, 4))
        whole.tmatmul(d, out)
        np.testing.assert_allclose(out, X.T @ d, rtol=1e-12, atol=1e-13)
    idx = rng.permutation(120)[:50]
    batch = whole.take(idx)  # shares the scratch and overwrites it
    db = rng.normal(size=(50, 4))
    batch.tmatmul(db, out)
    np.testing.assert_allclose(out, X[idx].T @ db, rtol=1e-12, atol=1e-13)
    whole.tmatmul(d, out)  # sorted again: the scratch held the batch
    np.testing.assert_allclose(out, X.T @ d, rtol=1e-12, atol=1e-13)
    whole.take(idx).tmatmul(db, out)  # a new selection of the same rows: sorted anew
    assert sorts == [1, 0, 0, 1, 1, 1]


def test_csr_input_with_unsorted_indices_and_rows_as_views():
    sp = pytest.importorskip("scipy.sparse")
    from fastgd.models.mlp import _CSR

    X = np.array([[0.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # the same matrix with each row's entries stored in reverse order
    m = sp.csr_matrix((np.array([3.0, 2.0, 1.0]), np.array([2, 1, 0]), np.array([0, 2, 3, 3])),
                      shape=(3, 3))
    A = _CSR(m, np.dtype(np.float64))
    d = np.arange(6.0).reshape(3, 2)
    out = np.empty((3, 2))
    A.tmatmul(d, out)
    np.testing.assert_array_equal(out, X.T @ d)
    A.matmul(d[:, ::-1].copy(), out)
    np.testing.assert_array_equal(out, X @ d[:, ::-1])
    B = _CSR.from_dense(X)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(B, name), getattr(sp.csr_matrix(X), name))
    part = B.take(np.array([2, 0]))
    assert part.shape == (2, 3) and part.data is B.data and list(part.rows) == [2, 0]
    assert list(part.take(np.array([1])).rows) == [0]  # positions within the selection


def test_csr_choice_reads_a_sample_of_a_large_dense_input_first(monkeypatch):
    from fastgd.models import mlp

    model = MLP([10, 4, 2], output="multiclass", dtype=np.float64)
    rows = 3 * mlp._SAMPLED_ROWS
    counted = []
    real = np.count_nonzero

    def counting(a, *args, **kwargs):
        counted.append(a.shape[0])
        return real(a, *args, **kwargs)

    monkeypatch.setattr(np, "count_nonzero", counting)
    dense = np.ones((rows, 10))
    assert not model._csr_pays(dense, 1)
    assert counted == [mlp._SAMPLED_ROWS]  # the sample only
    counted.clear()
    rng = np.random.default_rng(9)
    sparse = _mostly_zero(rows, 10, 0.1, rng)
    assert model._csr_pays(sparse, 1)
    assert counted == [mlp._SAMPLED_ROWS, rows]  # a sparse sample: then all of it
    counted.clear()
    # the sample decides only when clearly dense: a sparse-looking sample of a dense X
    # (every sampled row zero) still gets the whole count, and the right answer
    tricky = np.ones((rows, 10))
    tricky[::3] = 0.0
    assert not model._csr_pays(tricky, 1)
    assert counted == [mlp._SAMPLED_ROWS, rows]
    counted.clear()
    small = _mostly_zero(mlp._SAMPLED_ROWS, 10, 0.1, rng)  # no sample: counted once
    assert model._csr_pays(small, 1) and counted == [mlp._SAMPLED_ROWS]


def test_mostly_zero_dense_input_takes_the_csr_kernels():
    from fastgd.models.mlp import _CSR, SPARSE_DENSITY

    rng = np.random.default_rng(7)
    model = MLP([30, 8, 3], output="multiclass", dtype=np.float64, seed=0)
    for threads in (1, 2, 8):
        limit = SPARSE_DENSITY[min(threads, 2)]
        assert model._csr_pays(_mostly_zero(50, 30, limit * 0.8, rng), threads)
        assert not model._csr_pays(_mostly_zero(50, 30, limit * 1.5, rng), threads)
    sparse = _mostly_zero(50, 30, 0.1, rng)
    assert not model._csr_pays(sparse[:0], 1)
    linear = MLP([30, 3], output="multiclass", dtype=np.float64)
    assert not linear._csr_pays(sparse, 1)  # its one-pass kernel reads X once
    y = rng.integers(0, 3, 50)
    Xs, ys = model._prepare(sparse, y)
    loss = model._loss_and_grad(Xs, ys)
    grads = model.flat.grad_buffers[np.dtype(np.float64)].copy()
    assert model._loss_and_grad(_CSR.from_dense(Xs), ys) == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(model.flat.grad_buffers[np.dtype(np.float64)], grads,
                               rtol=1e-12, atol=1e-15)


_COMPILED_CASES = [  # (layer sizes, output, loss)
    ([5, 7, 3], "multiclass", None), ([5, 7, 6, 4], "multiclass", None),
    ([5, 7, 3], "multilabel", None), ([5, 7, 3], "regression", "mse"),
    ([5, 7, 6, 3], "regression", "squared_error"), ([5, 7, 3], "regression", "huber"),
    ([5, 7, 3], "regression", "poisson"),
]
#: Layers of width 1, where NumPy's matmul takes gemv, a dot product or its own loop
_WIDTH_ONE_CASES = [
    ([5, 7, 1], "binary", None), ([5, 7, 1], "regression", "squared_error"),
    ([1, 7, 3], "multiclass", None), ([5, 1, 3], "multiclass", None),
    ([1, 1, 1], "regression", "mse"), ([1, 7, 1], "binary", None),
]


def _pass(model, X, y, correct, weights=None):
    loss = model._loss_and_grad(X, y, weights, correct)
    return loss, model.flat.grad_buffers[model.dtype].copy(), model._ws[X.shape[0]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("sizes", "output", "loss", "activation"), [
    *((*case, act) for case in _COMPILED_CASES for act in ACTIVATIONS),
    *((*case, act) for case in _WIDTH_ONE_CASES for act in ("relu", "softplus"))])
def test_compiled_pass_equals_the_python_pass_bit_for_bit(sizes, output, loss, activation,
                                                          dtype, monkeypatch):
    _needs_callable_blas()
    rng = np.random.default_rng(3)
    for rows in (13, 1):
        X = rng.standard_normal((rows, sizes[0])).astype(dtype)
        X[X < -1] = -0.0  # signed zeros: NumPy's loop for an inner dimension of 1 adds to 0
        k = sizes[-1]
        y = {"multiclass": rng.integers(0, k, rows),
             "multilabel": (rng.random((rows, k)) > 0.5).astype(dtype),
             "binary": (rng.random((rows, k)) > 0.5).astype(dtype),
             "regression": rng.random((rows, k)).astype(dtype) * 3}[output]
        _compare_passes(sizes, output, loss, activation, dtype, X, y, monkeypatch)
        weights = rng.random(rows) * 2
        weights[::3] = 0  # rows that do not count; with an l1 penalty
        _compare_passes(sizes, output, loss, activation, dtype, X, y, monkeypatch,
                        weights=weights)


def _needs_callable_blas():
    from fastgd.kernels.cpu import blas

    if blas.addresses() is None:
        pytest.skip("NumPy's BLAS is not a library fastgd's compiled pass can call")


def _compare_passes(sizes, output, loss, activation, dtype, X, y, monkeypatch, threads=1,
                    weights=None):
    from fastgd._threads import blas_threads

    runs = []
    for compiled in (True, False):
        model = MLP(sizes, activation=activation, output=output, loss=loss, seed=1,
                    dtype=dtype, l2=0.1, l1=0.0 if weights is None else 0.03)
        if model.l1:  # the l1 gradient's sign of zeros, as np.sign
            first = model.flat.params[0].reshape(-1)
            first[:2] = (0.0, -0.0)[:first.size]
        if not compiled:
            monkeypatch.setattr(model, "_compiled_pass", lambda X: False)
        Xp, yp = model._prepare(X, y)
        w = model._check_weights(weights, Xp.shape[0])
        correct = np.zeros(1) if output != "regression" else None
        with fastgd.serial_kernels(), blas_threads(threads):
            assert model._compiled_pass(Xp) == compiled
            first = _pass(model, Xp, yp, correct, w)  # twice: the second on the first's state
            loss_value, grads, ws = _pass(model, Xp, yp, correct, w)
        runs.append((first[0], first[1], loss_value, grads, ws,
                     None if correct is None else correct[0]))
    (l1, g1, l2, g2, w1, c1), (m1, h1, m2, h2, v1, d1) = runs
    assert (l1, l2) == (m1, m2) and np.isfinite(l1)
    assert _same_bits(g1, h1) and _same_bits(g2, h2) and np.any(g2 != 0)
    for name in ("Z", "A", "D"):
        for a, b in zip(w1[name], v1[name]):
            assert _same_bits(a, b), name
    assert c1 == d1


def _same_bits(a, b):
    """Equal bit for bit (signed zeros told apart, which np.array_equal does not)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("sizes", "output"), [
    ([70, 33, 1], "binary"), ([1, 45, 9], "multiclass"), ([70, 1, 9], "multiclass"),
    ([37, 40, 1], "regression")])
def test_compiled_pass_takes_numpys_routine_for_each_shape(sizes, output, dtype,
                                                          monkeypatch):
    # larger than the case above: BLAS's gemv and gemm run their blocked loops and tails,
    # on one thread and on BLAS's own (None: unlimited), where the products split
    _needs_callable_blas()
    rng = np.random.default_rng(11)
    for rows, threads in ((301, None), (301, 1), (64, None)):
        X = rng.standard_normal((rows, sizes[0])).astype(dtype)
        y = (rng.integers(0, sizes[-1], rows) if output == "multiclass"
             else (rng.random((rows, sizes[-1])) > 0.5).astype(dtype))
        _compare_passes(sizes, output, None, "relu", dtype, X, y, monkeypatch, threads)


def test_compiled_pass_only_where_it_applies(monkeypatch):
    from fastgd.kernels.cpu import batch

    from fastgd.models.mlp import _CSR

    _needs_callable_blas()
    X = np.zeros((8, 4), np.float32)
    model = MLP([4, 6, 3], output="multiclass", seed=0)
    assert model._compiled_pass(X)  # on BLAS's own threads too: NumPy's library
    with fastgd.serial_kernels():
        assert model._compiled_pass(X)
        assert model._compiled_pass(X[:1])  # one row: gemv, as NumPy
        assert not model._compiled_pass(X[:0])  # no rows
        assert not model._compiled_pass(_CSR.from_dense(X))  # a sparse input
        assert not MLP([4, 3], output="multiclass")._compiled_pass(X)
        assert MLP([4, 6, 1], output="binary")._compiled_pass(X)
        assert MLP([4, 6, 3], output="multiclass", l1=0.1)._compiled_pass(X)
        monkeypatch.setattr(batch, "available", lambda: False)  # no BLAS it can call
        assert not model._compiled_pass(X)


def test_the_compiled_pass_calls_kernels_that_are_serial_everywhere():
    # the driver calls serial builds; the Python pass may only ever choose the same
    import re
    from pathlib import Path

    from fastgd.kernels.cpu import _jit, batch, nn

    source = Path(batch.__file__).read_text()
    called = set(re.findall(r'serial_body\("nn", "(\w+)"', source))
    kernels = called | {"softmax_xent", "bce_logits", "mse", "huber", "poisson",
                        "correct_labels", "correct_binary"}
    assert {"bias_act", "colsum", "l2_grad", "act_grad_colsum"} <= kernels
    for name in kernels:
        assert getattr(nn, name).threshold == _jit.NEVER_PARALLEL, name
