"""LBFGS: the same iterates as torch.optim.LBFGS (float64), its state, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd.optim.registry import RULES
from tests.helpers import assert_unchanged, snapshot

OPTIONS = list(RULES["LBFGS"].options)
RNG = np.random.default_rng(0)
A = RNG.standard_normal((30, 12))
B = RNG.standard_normal(30)


def _loss_np(x):
    """A convex but not quadratic loss: least squares plus a quartic term."""
    r = A @ x - B
    return 0.5 * r @ r + 0.05 * np.sum(x**4), A.T @ r + 0.2 * x**3


def _rosenbrock(x):
    a, b = x[0], x[1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    return f, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


@pytest.fixture
def torch64():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


def _torch_closure(torch, topt, params, fn):
    def closure():
        topt.zero_grad()
        x = torch.cat([p.reshape(-1) for p in params])
        f, g = fn(x.detach().numpy())
        offset = 0
        for p in params:
            p.grad = torch.tensor(g[offset:offset + p.numel()]).reshape(p.shape)
            offset += p.numel()
        return torch.tensor(f)
    return closure


@pytest.mark.parametrize("hp", OPTIONS)
@pytest.mark.parametrize(("fn", "sizes", "steps"), [(_loss_np, (5, 7), 4),
                                                    (_rosenbrock, (1, 1), 12)])
def test_same_iterates_as_torch(torch64, hp, fn, sizes, steps):
    torch = torch64
    x0 = np.full(sum(sizes), -1.2) if fn is _rosenbrock else RNG.standard_normal(sum(sizes))
    parts = np.split(x0, np.cumsum(sizes)[:-1])
    ours = [p.copy() for p in parts]
    theirs = [torch.tensor(p.copy()) for p in parts]
    opt = fastgd.LBFGS(ours, **hp)
    topt = torch.optim.LBFGS(theirs, **hp)

    def closure():
        f, g = fn(np.concatenate(ours))
        return f, np.split(g, np.cumsum(sizes)[:-1])

    tclosure = _torch_closure(torch, topt, theirs, fn)
    for k in range(steps):
        assert opt.step(closure) == pytest.approx(float(topt.step(tclosure)), rel=1e-8,
                                                  abs=1e-10)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"{k}")
    st, tst = opt.state[0], topt.state[theirs[0]]
    assert st["n_iter"] == tst["n_iter"] and st["func_evals"] == tst["func_evals"]


def test_flat_params_closure_fills_the_gradient_buffer(torch64):
    torch = torch64
    flat = fastgd.FlatParams([(5,), (7,)], dtype=np.float64)
    x0 = RNG.standard_normal(12)
    flat.buffers[np.dtype(np.float64)][...] = x0
    theirs = [torch.tensor(x0[:5].copy()), torch.tensor(x0[5:].copy())]
    opt = fastgd.LBFGS(flat, line_search_fn="strong_wolfe")
    topt = torch.optim.LBFGS(theirs, line_search_fn="strong_wolfe")
    buf, gbuf = flat.buffers[np.dtype(np.float64)], flat.grad_buffers[np.dtype(np.float64)]

    def closure():
        f, g = _loss_np(buf)
        gbuf[...] = g
        return f

    tclosure = _torch_closure(torch, topt, theirs, _loss_np)
    for _ in range(3):
        opt.step(closure)
        topt.step(tclosure)
    np.testing.assert_allclose(buf, torch.cat(theirs).numpy(), rtol=1e-8, atol=1e-10)


def test_converges_on_rosenbrock():
    x = np.array([-1.2, 1.0])
    opt = fastgd.LBFGS([x], line_search_fn="strong_wolfe", max_iter=200, tolerance_change=1e-14,
                       tolerance_grad=1e-10)
    opt.step(lambda: (lambda f, g: (f, [g]))(*_rosenbrock(x)))
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-6)


def _quadratic_fit(A, b, line_search_fn):
    x = np.zeros(b.size)
    opt = fastgd.LBFGS([x], history_size=5, max_iter=30, line_search_fn=line_search_fn)
    opt.step(lambda: (float(0.5 * x @ A @ x - b @ x), [A @ x - b]))
    return x


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_small_float64_vectors_take_numpy_with_the_kernels_results(monkeypatch, line_search_fn):
    from fastgd import _backend
    from fastgd.optim import lbfgs

    rng = np.random.default_rng(2)
    A = rng.normal(size=(30, 30))
    A = A @ A.T + 30 * np.eye(30)
    b = rng.normal(size=30)
    launched = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda *a: launched.append(a[1]) or real(*a))
    small = _quadratic_fit(A, b, line_search_fn)  # NumPy's calls, but the two-loop kernel
    assert set(launched) == {"two_loop"}
    launched.clear()
    monkeypatch.setattr(lbfgs, "_SMALL", 0)
    kernels = _quadratic_fit(A, b, line_search_fn)
    assert {"two_loop", "axpy"} <= set(launched)
    np.testing.assert_allclose(small, kernels, rtol=1e-10, atol=1e-12)
    assert not np.allclose(small, 0)


def test_state_dict_resume_and_checkpoint(tmp_path):
    def run(x, opt, steps):
        for _ in range(steps):
            opt.step(lambda: (lambda f, g: (f, [g]))(*_loss_np(x)))

    x0 = RNG.standard_normal(12)
    a = x0.copy()
    run(a, fastgd.LBFGS([a], max_iter=3, history_size=4), 5)
    b = x0.copy()
    opt_b = fastgd.LBFGS([b], max_iter=3, history_size=4)
    run(b, opt_b, 2)
    fastgd.save(tmp_path / "l.npz", params=[b], optimizer=opt_b)
    sd = opt_b.state_dict()
    assert sd["state"][0]["old_dirs"].shape[1] == 12
    c = np.zeros(12)
    opt_c = fastgd.LBFGS([c], max_iter=3, history_size=4)
    fastgd.load(tmp_path / "l.npz", params=[c], optimizer=opt_c)
    run(c, opt_c, 3)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda: fastgd.LBFGS([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)]}]),
     ValueError, "doesn't support per-parameter options"),
    (lambda: fastgd.LBFGS([np.zeros(2), np.zeros(2, np.float32)]), TypeError,
     "parameters of one dtype"),
    (lambda: fastgd.LBFGS([np.zeros(2)], line_search_fn="armijo"), ValueError,
     "only 'strong_wolfe' is supported"),
    (lambda: fastgd.LBFGS([np.zeros(2)], history_size=0), ValueError,
     "history_size must be an integer >= 1"),
    (lambda: fastgd.LBFGS([np.zeros(2)], lr=-1), ValueError, "Invalid learning rate"),
])
def test_construction_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_step_errors_change_nothing():
    x = np.ones(3)
    opt = fastgd.LBFGS([x], nonfinite="raise")
    before = snapshot([x])
    with pytest.raises(TypeError, match="needs a closure"):
        opt.step()
    with pytest.raises(TypeError, match=r"must return \(loss, grads\)"):
        opt.step(lambda: 1.0)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape"):
        opt.step(lambda: (1.0, [np.ones(4)]))
    with pytest.raises(fastgd.NonFiniteGradientError):
        opt.step(lambda: (1.0, [np.array([np.nan, 0, 0])]))
    assert_unchanged(before, [x])
    skip = fastgd.LBFGS([x], nonfinite="skip")
    assert skip.step(lambda: (2.0, [np.array([np.inf, 0, 0])])) == 2.0
    assert skip.steps_skipped == 1
    assert_unchanged(before, [x])


def test_blas_threads_during_the_step():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    x = np.array([3.0, -1.0])

    def closure():
        seen.append(max((i["num_threads"] for i in threadpoolctl.threadpool_info()
                         if i["user_api"] == "blas"), default=1))
        return float(x @ x), [2 * x]

    before = max((i["num_threads"] for i in threadpoolctl.threadpool_info()
                  if i["user_api"] == "blas"), default=1)
    fastgd.LBFGS([x], max_iter=2).step(closure)
    assert set(seen) == {1}
    seen.clear()
    fastgd.LBFGS([x], max_iter=2, blas_threads=None).step(closure)
    assert set(seen) == {before}
    for bad in (0, 1.5, "2"):
        with pytest.raises(ValueError, match="blas_threads"):
            fastgd.LBFGS([x], blas_threads=bad)


def test_a_step_allocates_no_vector_once_the_history_is_full():
    import tracemalloc

    n = 50_000
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, n)
    flat = fastgd.FlatParams([(n,)], np.float64)
    (x,), (gx,) = flat.params, flat.grads
    x[...] = rng.standard_normal(n)

    def closure():
        np.multiply(scale, x, out=gx)
        return 0.5 * float(gx @ x)

    opt = fastgd.LBFGS(flat, history_size=3, max_iter=5, tolerance_grad=0.0,
                       tolerance_change=0.0)
    opt.step(closure)
    opt.step(closure)  # the history is full: pairs that leave it are recycled
    tracemalloc.start()
    try:
        opt.step(closure)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * n  # less than one vector of the parameters' size


def _two_loop_reference(Y, S, order, ro, h_diag, g, chunks):
    """The recursion by the separate kernels: a dot reduction and an axpy per pair."""
    from fastgd import _backend

    def dot(x, y):
        out = np.empty(chunks)
        _backend.kernel_rule("reduce", "dot").variant(False, ())(x, y, out)
        total = 0.0
        for v in out:  # the chunks in order, as the fused kernel sums them
            total += v
        return total

    d = -g
    al = {}
    for j in range(len(order) - 1, -1, -1):
        al[j] = dot(S[order[j]], d) * ro[j]
        _backend.launch("axpy", "axpy", (), Y[order[j]], -al[j], d)
    _backend.launch("axpy", "scaled", (), d, h_diag, d)
    for j in range(len(order)):
        be = dot(Y[order[j]], d) * ro[j]
        _backend.launch("axpy", "axpy", (), S[order[j]], al[j] - be, d)
    return d


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", [1, 16])
def test_two_loop_kernel_is_the_recursion_over_rows_in_history_order(dtype, chunks):
    from fastgd import _backend

    rng = np.random.default_rng(7)
    n = 1001
    Y = rng.standard_normal((7, n)).astype(dtype)
    S = (Y + 0.3 * rng.standard_normal((7, n))).astype(dtype)
    order = np.array([4, 0, 6, 2, 1])  # a history that wrapped around its rows
    ro = np.array([1.0 / float(np.dot(Y[r].astype(float), S[r])) for r in order])
    g = rng.standard_normal(n).astype(dtype)
    want = _two_loop_reference(Y, S, order, ro, 0.7, g, chunks)
    got = []
    for build in (False, True):  # serial and prange builds
        d = np.full(n, np.nan, dtype)
        _backend.kernel_rule("axpy", "two_loop").variant(build, ())(
            Y, S, order, ro, 0.7, np.empty(chunks), g, d)
        got.append(d)
    np.testing.assert_array_equal(got[0], got[1])  # the same chunks: the same bits
    # the sums' vectorization may differ from the dot kernel's in the last bit
    np.testing.assert_allclose(got[0], want, rtol=1e-13 if dtype == np.float64 else 1e-6,
                               atol=1e-13 if dtype == np.float64 else 1e-6)
    assert not np.allclose(want, -0.7 * g, rtol=1e-3)  # the pairs changed the direction
    empty = np.full(n, np.nan, dtype)  # no pairs: d = -h g
    _backend.launch("axpy", "two_loop", (), Y, S, order[:0], ro[:0], 0.7, np.empty(1), g, empty)
    np.testing.assert_array_equal(empty, dtype(0.7) * -g)


def test_history_rows_are_reused_and_kept_in_order_as_they_grow():
    from fastgd.optim.lbfgs import _History

    h = _History(np.zeros(3))
    seen = []
    for k in range(9):
        row, y, s = h.candidate(history=3)
        y[...], s[...] = k, -k
        if k == 4:
            h.drop(row)  # a rejected pair gives its row back
            continue
        h.push(row, ys=float(k + 1), history=3)
        seen.append(k)
    assert h.Y.shape == (4, 3)  # history + 1 rows at most
    assert [float(v[0]) for v in h.dirs] == seen[-3:] and [float(v[0]) for v in h.stps] == [
        -k for k in seen[-3:]]
    assert h.ro == [1.0 / (k + 1) for k in seen[-3:]]
    again = _History.of(np.zeros(3), h.dirs, h.stps, h.ro)
    np.testing.assert_array_equal(np.stack(again.dirs), np.stack(h.dirs))
    assert again.ro == h.ro


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_a_list_of_arrays_steps_as_the_same_flat_params(dtype, line_search_fn, monkeypatch):
    # separate arrays: the step's parameter updates are one multi-array launch each, with
    # the iterates of the same values in one FlatParams, bit for bit
    from fastgd import _backend

    rng = np.random.default_rng(5)
    shapes = [(3, 4), (5000,), (), (7,), (0,)]
    scale = [rng.uniform(0.5, 2.0, s).astype(dtype) for s in shapes]
    init = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]
    params = [x.copy() for x in init]
    flat = fastgd.FlatParams(init, dtype)

    def list_closure():
        grads = [np.asarray(s * p) for s, p in zip(scale, params)]
        return sum(0.5 * float(np.sum(g * p)) for g, p in zip(grads, params)), grads

    def flat_closure():
        loss = 0.0
        for s, p, g in zip(scale, flat.params, flat.grads):
            np.multiply(s, p, out=g)
            loss += 0.5 * float(np.sum(g * p))
        return loss

    kw = {"lr": 0.5, "max_iter": 6, "history_size": 3, "line_search_fn": line_search_fn}
    a, b = fastgd.LBFGS(params, **kw), fastgd.LBFGS(flat, **kw)
    launches = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda *x: launches.append(
        (x[1], type(x[-1]).__name__)) or real(*x))
    for _ in range(2):
        assert a.step(list_closure) == b.step(flat_closure)
        for p, q in zip(params, flat.params):
            np.testing.assert_array_equal(p, q)
    updates = [k for k in launches if k[0] == "axpy"]
    assert ("axpy", "MultiSpan") in updates  # the list's updates: multi-array launches
    assert not np.allclose(params[1], init[1])
