"""Clipping (standalone and fused into step), non-finite policies, accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastgd
from fastgd import schedules as S
from fastgd.clip import clip_grad_norm_, clip_grad_value_, grad_norm
from tests.helpers import assert_unchanged, snapshot

DTYPES = [np.float32, np.float64]


def _grads(rng, dtype, scale=3.0):
    return [np.asarray(rng.standard_normal(s) * scale, dtype=dtype)
            for s in [(40, 30), (0,), (), (7,)]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type, dtype, rng):
    torch = pytest.importorskip("torch")
    grads = _grads(rng, dtype)
    tps = []
    grads = [g for g in grads if g.size]  # torch refuses the inf-norm of an empty tensor
    for g in grads:
        t = torch.zeros(g.shape, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                        requires_grad=True)
        t.grad = torch.tensor(g.copy())
        tps.append(t)
    expected = torch.nn.utils.clip_grad_norm_(tps, max_norm=1.5, norm_type=norm_type)
    norm = clip_grad_norm_(grads, 1.5, norm_type)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    assert norm == pytest.approx(float(expected), rel=rtol)
    for g, t in zip(grads, tps):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=rtol, atol=rtol)
    assert grad_norm(grads, norm_type) == pytest.approx(min(norm, 1.5), rel=1e-5)


def test_clip_grad_norm_large_arrays_use_the_parallel_reduction(rng):
    g = rng.standard_normal(300_001)
    expected = float(np.sqrt(np.sum(g * g)))
    assert clip_grad_norm_([g], 1e9) == pytest.approx(expected, rel=1e-13)
    # deterministic: the same value twice, bit for bit
    assert grad_norm([g]) == grad_norm([g])


def test_clip_grad_norm_nonfinite():
    g = [np.array([1.0, np.inf]), np.array([2.0])]
    before = snapshot(g)
    with pytest.raises(fastgd.NonFiniteGradientError, match=r"norm of order 2\.0"):
        clip_grad_norm_(g, 1.0, error_if_nonfinite=True)
    assert_unchanged(before, g)
    assert clip_grad_norm_(g, 1.0) == math.inf  # torch: scale by 0 -> inf*0 = nan
    assert np.isnan(g[0][1]) and g[0][0] == 0.0 and g[1][0] == 0.0


def test_clip_grad_value():
    torch = pytest.importorskip("torch")
    g = np.array([-3.0, -0.5, 0.0, 0.7, 9.0, np.nan])
    param = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    param.grad = torch.tensor(g.copy())
    torch.nn.utils.clip_grad_value_([param], 1.0)
    expected = param.grad.numpy()
    clip_grad_value_(g, 1.0)
    np.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda g: clip_grad_norm_(g, -1.0), ValueError, "Invalid max_norm value"),
    (lambda g: clip_grad_norm_(g, 1.0, norm_type=0), ValueError, "norm_type must be"),
    (lambda g: clip_grad_norm_(g, 1.0, norm_type="two"), ValueError, "norm_type must be"),
    (lambda g: clip_grad_value_(g, math.nan), ValueError, "clip_value"),
    (lambda g: clip_grad_norm_([*g, np.ones(2, np.int32)], 1.0), TypeError, "dtype int32"),
    (lambda g: clip_grad_norm_(3.0, 1.0), TypeError, "must be an array or a list"),
    (lambda g: clip_grad_norm_([*g, np.ones(2, np.float16)], 1.0), TypeError,
     r"grads\[2\] has dtype float16"),
    (lambda g: clip_grad_norm_([*g, np.ones((3, 4))[:, 1]], 1.0), ValueError,
     r"grads\[2\] is not C-contiguous"),
    (lambda g: clip_grad_value_([*g, np.frombuffer(b"\0" * 16)], 1.0), ValueError,
     r"grads\[2\] is read-only"),
    (lambda g: clip_grad_value_((*g, [1.0]), 1.0), TypeError,
     r"grads\[2\] must be a NumPy or CuPy array, got list"),
])
def test_clip_errors_change_nothing(call, exc, match):
    g = [np.full(3, 5.0), np.full(2, -4.0)]
    before = snapshot(g)
    with pytest.raises(exc, match=match):
        call(g)
    assert_unchanged(before, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop", "Lion"])
def test_fused_clip_equals_clip_then_step(name, dtype, rng):
    kw = {"lr": 0.01, "maximize": name == "RMSprop"}
    if name == "SGD":
        kw["momentum"] = 0.9
    init = _grads(rng, dtype, 1.0)
    a, b = [x.copy() for x in init], [x.copy() for x in init]
    fused = getattr(fastgd, name)(a, **kw)
    plain = getattr(fastgd, name)(b, **kw)
    for t in range(5):
        g = _grads(rng, dtype, 3.0 if t % 2 else 0.01)
        assert fused.step(g, clip_norm=2.0)
        g2 = [x.copy() for x in g]
        norm = clip_grad_norm_(g2, 2.0)
        plain.step(g2)
        assert fused.last_grad_norm == norm
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_fused_clip_one_reduction_and_one_update_per_flat_group(monkeypatch):
    from fastgd import _backend

    flat = fastgd.FlatParams([(30, 20), (20,), (5,)])
    for g in flat.grads:
        g[...] = 3.0
    opt = fastgd.Adam(flat, lr=0.1)
    calls = []
    real_reduce, real_launch = _backend.reduce, _backend.launch
    monkeypatch.setattr(_backend, "reduce", lambda *a: calls.append("reduce") or real_reduce(*a))
    monkeypatch.setattr(_backend, "launch", lambda *a: calls.append("update") or real_launch(*a))
    opt.step(clip_norm=1.0)
    assert calls == ["reduce", "update"]


@pytest.mark.parametrize("clip", [None, 1.0])
def test_nonfinite_skip(clip):
    w = [np.ones(3), np.ones(2)]
    opt = fastgd.Adam(w, lr=S.step_decay(0.1, 1, 0.5), nonfinite="skip")
    assert opt.step([np.ones(3), np.ones(2)], clip_norm=clip)
    before = snapshot(w, opt)
    assert not opt.step([np.array([1.0, np.nan, 1.0]), np.ones(2)], clip_norm=clip)
    assert not opt.step([np.ones(3), np.array([np.inf, 0.0])], clip_norm=clip)
    assert_unchanged(before, w, opt)
    assert opt.steps_skipped == 2 and opt.steps_applied == 1
    assert opt.state[0]["step"] == 1
    # the schedule sees applied steps only: the next step uses lr = 0.05
    ref = [x.copy() for x in w]
    ref_opt = fastgd.Adam(ref, lr=0.1)
    ref_opt.load_state_dict({**opt.state_dict(), "param_groups": [
        {**opt.state_dict()["param_groups"][0], "lr": 0.05}]})
    opt.step([np.ones(3), np.ones(2)])
    ref_opt.step([np.ones(3), np.ones(2)])
    for x, y in zip(w, ref):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_nonfinite_raise(clip):
    w = [np.ones(3), np.ones(2)]
    opt = fastgd.SGD(w, lr=0.1, momentum=0.9, nonfinite="raise")
    opt.step([np.ones(3), np.ones(2)])
    before = snapshot(w, opt)
    with pytest.raises(fastgd.NonFiniteGradientError, match=r"grads\[1\]"):
        opt.step([np.ones(3), np.array([0.0, -np.inf])], clip_norm=clip)
    assert_unchanged(before, w, opt)
    assert opt.steps_applied == 1


def test_nonfinite_propagate_is_torch_behaviour_and_policy_is_checked():
    w = [np.ones(2)]
    opt = fastgd.SGD(w, lr=0.1)
    assert opt.step([np.array([np.nan, 1.0])])
    assert np.isnan(w[0][0]) and w[0][1] == 0.9
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        fastgd.SGD(w, lr=0.1, nonfinite="ignore")


def test_grad_scale_and_its_checks():
    w = [np.zeros(2)]
    opt = fastgd.SGD(w, lr=1.0)
    opt.step([np.ones(2)], grad_scale=0.25)
    np.testing.assert_array_equal(w[0], -0.25)
    before = snapshot(w, opt)
    with pytest.raises(ValueError, match="Invalid grad_scale value: nan"):
        opt.step([np.ones(2)], grad_scale=math.nan)
    with pytest.raises(ValueError, match="Invalid clip_norm value"):
        opt.step([np.ones(2)], clip_norm=-1.0)
    with pytest.raises(ValueError, match="norm_type must be"):
        opt.step([np.ones(2)], clip_norm=1.0, norm_type=-2)
    assert_unchanged(before, w, opt)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_accumulation_equals_one_step_on_the_window(reduction, rng):
    flat = fastgd.FlatParams([(6, 4), (4,)], dtype=np.float64)
    ref = [p.copy() for p in flat.params]
    opt = fastgd.Adam(flat, lr=0.01)
    ref_opt = fastgd.Adam(ref, lr=0.01)
    acc = fastgd.GradientAccumulator(opt, steps=4, reduction=reduction)
    for _ in range(3):
        window = [[rng.standard_normal(p.shape) for p in ref] for _ in range(4)]
        for j, micro in enumerate(window):
            for gv, g in zip(flat.grads, micro):
                gv[...] = g
            out = acc.step()
            assert out is (None if j < 3 else True)
        total = [sum(m[i] for m in window) for i in range(2)]
        ref_opt.step(total, grad_scale=0.25 if reduction == "mean" else 1.0)
        for p, r in zip(flat.params, ref):
            np.testing.assert_allclose(p, r, rtol=1e-14, atol=1e-15)


def test_accumulation_none_grads_and_flush():
    a, b = np.zeros(2), np.zeros(3)
    acc = fastgd.GradientAccumulator(fastgd.SGD([a, b], lr=1.0), steps=3)
    acc.step([np.ones(2), None])
    acc.step([np.ones(2), None])
    assert acc.flush() is True         # the partial window: mean over 2
    np.testing.assert_array_equal(a, -1.0)
    np.testing.assert_array_equal(b, 0.0)  # no gradient in the window: untouched
    assert acc.flush() is None and acc.count == 0


@pytest.mark.parametrize("policy", ["skip", "raise", "propagate"])
def test_nonfinite_micro_batch_follows_the_policy_for_the_window(policy):
    w = np.ones(2)
    opt = fastgd.SGD([w], lr=1.0, nonfinite=policy)
    acc = fastgd.GradientAccumulator(opt, steps=2)
    acc.step([np.array([np.nan, 1.0])])
    if policy == "raise":
        with pytest.raises(fastgd.NonFiniteGradientError):
            acc.step([np.ones(2)])
        np.testing.assert_array_equal(w, 1.0)
    elif policy == "skip":
        assert acc.step([np.ones(2)]) is False
        np.testing.assert_array_equal(w, 1.0)
    else:
        assert acc.step([np.ones(2)]) is True
        assert np.isnan(w[0]) and w[1] == 0.0
    # the window was dropped either way: the next one starts clean
    assert acc.count == 0
    acc.step([np.ones(2)])
    acc.step([np.ones(2)])
    if policy != "propagate":
        np.testing.assert_array_equal(w, 0.0)


def test_accumulator_checks():
    opt = fastgd.SGD([np.zeros(2)], lr=1.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        fastgd.GradientAccumulator(opt, 0)
    with pytest.raises(ValueError, match="reduction must be"):
        fastgd.GradientAccumulator(opt, 2, reduction="max")
    acc = fastgd.GradientAccumulator(opt, 2)
    with pytest.raises(ValueError, match="has shape"):
        acc.step([np.ones(3)])
    assert acc.count == 0


#: The reductions of kernels/cpu/reduce.py: (name, scalars, NumPy's value over a chunk).
_REDUCTIONS = [
    ("sumsq", (), lambda c: np.sum(c.astype(np.float64) ** 2)),
    ("sumabs", (), lambda c: np.sum(np.abs(c.astype(np.float64)))),
    ("sumpow", (3.0,), lambda c: np.sum(np.abs(c.astype(np.float64)) ** 3.0)),
    ("absmax", (), lambda c: np.max(np.abs(c.astype(np.float64)))),
    ("nonfinite", (), lambda c: np.sum(c.astype(np.float64) * 0.0)),
]


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 40_000, 1_000_003])  # serial and parallel builds
@pytest.mark.parametrize("special", [None, np.nan, np.inf, -np.inf, "subnormal", "zeros"])
def test_reductions_match_numpy_chunk_by_chunk(dtype, n, special):
    from fastgd import _backend

    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype) * 3
    if special == "zeros":
        x[:] = 0.0
    elif special == "subnormal":
        x[:] = np.finfo(dtype).smallest_subnormal * 7
    elif special is not None:
        x[rng.integers(n)] = special
    for name, scalars, ref in _REDUCTIONS:
        parts = _backend.reduce(name, x, *scalars)
        k = parts.size
        want = [ref(x[c * n // k : (c + 1) * n // k]) for c in range(k)]
        np.testing.assert_allclose(parts, want, rtol=1e-12, atol=0, err_msg=name)


def test_accumulation_over_a_flat_params_is_one_launch_per_dtype(monkeypatch, rng):
    from fastgd import _backend

    flat = fastgd.FlatParams([(5, 3), (7,), (2, 2)], np.float32)
    ref = [p.copy() for p in flat.params]
    acc = fastgd.GradientAccumulator(fastgd.SGD(flat, lr=0.1), steps=3)
    ref_acc = fastgd.GradientAccumulator(fastgd.SGD(ref, lr=0.1), steps=3)
    launches = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda m, n, *a: (launches.append(n), real(m, n, *a)))
    for _ in range(3):
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        grads = [g.copy() for g in flat.grads]
        launches.clear()
        acc.step()
        if acc.count:  # an accumulation (not the window's step): one axpy for the buffer
            assert launches.count("axpy") in (0, 1)
        ref_acc.step(grads)
    for a, b in zip(flat.params, ref):
        np.testing.assert_array_equal(a, b)


def test_accumulation_follows_the_gradient_objects_given(rng):
    # gradients given as views of one buffer add with one launch per run, found again
    # while the same views come back; other objects in their place are read where they are
    sizes = [4, 9, 2]
    cuts = np.cumsum(sizes)[:-1]
    params = np.split(np.zeros(sum(sizes)), cuts)
    ref = [p.copy() for p in params]
    acc = fastgd.GradientAccumulator(fastgd.SGD(params, lr=1.0), steps=2)
    ref_acc = fastgd.GradientAccumulator(fastgd.SGD(ref, lr=1.0), steps=2)
    gbuf = np.zeros(sum(sizes))
    views = np.split(gbuf, cuts)
    edited = list(views)
    for k in range(8):
        gbuf[...] = rng.standard_normal(gbuf.size)
        if k == 3:
            edited[1] = rng.standard_normal(sizes[1])
        given = {2: [v.copy() * 2 for v in views], 3: edited, 5: edited}.get(k, views)
        acc.step(given)
        ref_acc.step([g.copy() for g in given])
        for p, r in zip(params, ref):
            np.testing.assert_array_equal(p, r)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [None, np.nan, np.inf])
def test_multi_array_reductions_match_numpy_item_by_item(dtype, special):
    # a list of arrays reduced by one call: a partial per work item (an array, or a chunk
    # of a long one), the same whatever the thread count
    import numba

    from fastgd import _backend

    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(s).astype(dtype) * 3
              for s in (5, 40_000, 1, 16_384, 3, 100_000)]
    if special is not None:
        arrays[1][12_345] = special
    x = _backend.multi_span(arrays)
    lay = x.layout
    for name, scalars, ref in _REDUCTIONS:
        parts = _backend.reduce(name, x, *scalars)
        want = [ref(arrays[a][o : o + n]) for a, o, n in
                zip(lay.item_of, lay.chunk_offsets, lay.chunk_sizes)]
        assert parts.size == lay.item_of.size > len(arrays)
        np.testing.assert_allclose(parts, want, rtol=1e-12, atol=0, err_msg=name)
        threads = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            one = _backend.reduce(name, x, *scalars)
        finally:
            numba.set_num_threads(threads)
        np.testing.assert_array_equal(one, parts, err_msg=name)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_norms_and_clipping_of_a_list_take_one_call_per_dtype(norm_type, monkeypatch, rng):
    from fastgd import _backend

    shapes = [(40, 30), (0,), (), (7,), (20_000,), (3, 2)]
    grads = [np.asarray(rng.standard_normal(s) * 3, dtype=np.float32 if i % 2 else np.float64)
             for i, s in enumerate(shapes)]
    flat = np.concatenate([g.astype(np.float64).ravel() for g in grads])
    want = (np.max(np.abs(flat)) if norm_type == math.inf
            else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type))
    calls = []
    real_reduce, real_launch = _backend.reduce, _backend.launch
    monkeypatch.setattr(_backend, "reduce", lambda *a: calls.append(a[0]) or real_reduce(*a))
    monkeypatch.setattr(_backend, "launch", lambda *a: calls.append(a[1]) or real_launch(*a))
    norm = grad_norm(grads, norm_type)
    assert norm == pytest.approx(want, rel=1e-12)
    assert len(calls) == 2  # float64 arrays, then float32 ones
    calls.clear()
    expected = [g * g.dtype.type(1.5 / (norm + 1e-6)) for g in grads]
    assert clip_grad_norm_(grads, 1.5, norm_type) == norm
    assert calls.count("scale") == 2 and len(calls) == 4
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)
    calls.clear()
    expected = [np.clip(g, -0.01, 0.01) for g in grads]
    clip_grad_value_(grads, 0.01)
    assert calls == ["clamp", "clamp"]
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)


def test_accumulation_of_separate_arrays_is_one_copy_or_one_launch_per_run(monkeypatch, rng):
    # separate gradient arrays (new ones every micro-batch): the first of a window copied
    # into the sums by one concatenate, the others added by one multi-array launch per
    # run of a dtype; the window's step equals one step on the sums
    from fastgd import _backend

    shapes = [(40_000,), (3, 5), (), (0,), (17,), (2, 2)]
    dtypes = [np.float32, np.float32, np.float32, np.float64, np.float64, np.float64]
    init = [np.asarray(rng.standard_normal(s), dtype=d) for s, d in zip(shapes, dtypes)]
    params, ref = [x.copy() for x in init], [x.copy() for x in init]
    acc = fastgd.GradientAccumulator(fastgd.Adam(params, lr=0.01), steps=3)
    ref_opt = fastgd.Adam(ref, lr=0.01)
    launches = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda m, n, *a: launches.append(n) or real(m, n, *a))
    for window in range(3):
        sums = None
        for k in range(3):
            grads = [np.asarray(rng.standard_normal(s), dtype=d) for s, d in zip(shapes, dtypes)]
            if window == 1 and k == 0:
                grads[4] = None  # seen later in the window: a run of its own there
            launches.clear()
            acc.step(grads)
            if k == 1 and window != 1:
                assert launches == ["axpy", "axpy"]  # one per dtype
            if sums is None:
                sums = [None if g is None else g.copy() for g in grads]
            else:
                sums = [g.copy() if s is None else np.asarray(s + g) for s, g in zip(sums, grads)]
        ref_opt.step(sums, grad_scale=1 / 3)
        for p, r in zip(params, ref):
            np.testing.assert_array_equal(p, r)


def test_grad_norm_reads_read_only_and_strided_arrays(rng):
    a = rng.standard_normal((6, 5))
    ro = np.frombuffer(rng.standard_normal(7).tobytes())  # read-only
    grads = [a[:, 2], ro, a.T]  # strided, read-only, a transposed view
    want = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    assert grad_norm(grads) == pytest.approx(want, rel=1e-13)
    assert grad_norm(tuple(grads), "inf") == max(float(np.max(np.abs(g))) for g in grads)


def test_an_array_listed_twice_is_clipped_twice_as_torch_does():
    torch = pytest.importorskip("torch")
    g = np.full(50_000, 2.0)  # large enough for the parallel kernels
    other = np.full(10, 1.0)
    t, t_other = torch.tensor(g.copy()), torch.tensor(other.copy())
    tp = []
    for v in (t, t_other, t):
        p = torch.zeros(v.shape, dtype=torch.float64, requires_grad=True)
        p.grad = v
        tp.append(p)
    want = torch.nn.utils.clip_grad_norm_(tp, 1.0)
    assert clip_grad_norm_([g, other, g], 1.0) == pytest.approx(float(want), rel=1e-12)
    np.testing.assert_allclose(g, t.numpy(), rtol=1e-12)
    np.testing.assert_allclose(other, t_other.numpy(), rtol=1e-12)
