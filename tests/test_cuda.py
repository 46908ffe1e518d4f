"""The CUDA backend on a real GPU (marked ``cuda``; skipped without CuPy and a device)."""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastgd
import fastgd.functional as F
from tests.conftest import CASES, DTYPES, RULES, tol
from tests.cuda_support import gpu_missing, has_gpu
from tests.reference import ReferenceOptimizer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not has_gpu(), reason=gpu_missing() or "")]

if has_gpu():
    import cupy as cp
    import cupyx

SHAPES = [(0,), (33, 7), (), (1001,), (0, 3)]


def _numpy_inputs(dtype, seed=0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_cuda_matches_reference_and_numba(name, case, dtype):
    cls, rule, options = RULES[name]
    hp = options[case]
    init = _numpy_inputs(dtype)
    host = [a.copy() for a in init]
    dev = [cp.asarray(a) for a in init]
    ref = [a.copy() for a in init]
    o_host, o_dev = cls(host, **hp), cls(dev, **hp)
    o_ref = ReferenceOptimizer(rule, ref, **hp)
    rng = np.random.default_rng(1)
    for t in range(12):
        grads = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in SHAPES]
        if t == 4:
            grads[1] = None
        o_host.step(grads)
        o_dev.step([None if g is None else cp.asarray(g) for g in grads])
        o_ref.step(grads)
        for d, h, r in zip(dev, host, ref):
            np.testing.assert_allclose(d.get(), h, **tol(dtype))
            np.testing.assert_allclose(d.get(), r, **tol(dtype))
    for i, st in o_dev.state.items():
        for k, v in st.items():
            if isinstance(v, cp.ndarray):
                np.testing.assert_allclose(v.get(), o_host.state[i][k], **tol(dtype))


def test_flat_params_on_the_gpu_one_launch_per_dtype(monkeypatch):
    from fastgd import _backend

    flat = fastgd.FlatParams([(300, 20), (20,), (0,), ()], xp=cp)
    assert isinstance(flat.buffers[np.dtype(np.float32)], cp.ndarray)
    for g in flat.grads:
        g[...] = 1.0
    opt = fastgd.Adam(flat, lr=0.1)
    calls = []
    real = _backend._launch_cuda
    monkeypatch.setattr(_backend, "_launch_cuda", lambda *a: calls.append(a[:2]) or real(*a))
    opt.step()
    assert calls == [("adam", "adam")]
    np.testing.assert_allclose(flat.params[0].get(), -0.1, rtol=1e-6)


def test_state_dict_crosses_backends_both_ways():
    init = _numpy_inputs(np.float32, shapes=[(5, 4), (3,)])
    dev = [cp.asarray(a) for a in init]
    host = [a.copy() for a in init]
    o_dev = fastgd.AdamW(dev, lr=0.01)
    g = [np.ones((5, 4), np.float32), np.ones(3, np.float32)]
    o_dev.step([cp.asarray(x) for x in g])
    sd = o_dev.state_dict()
    assert isinstance(sd["state"][0]["exp_avg"], cp.ndarray)
    o_host = fastgd.AdamW(host, lr=0.5)
    for a, d in zip(host, dev):
        a[...] = d.get()
    o_host.load_state_dict(sd)  # CuPy state into a NumPy optimizer
    o_dev2 = fastgd.AdamW([d.copy() for d in dev], lr=0.5)
    o_dev2.load_state_dict(o_host.state_dict())  # and NumPy state into a CuPy one
    o_host.step(g)
    o_dev2.step([cp.asarray(x) for x in g])
    for a, d in zip(host, o_dev2._params):
        np.testing.assert_allclose(d.get(), a, rtol=1e-6, atol=1e-7)


def test_checkpoint_from_numpy_loads_into_cupy_and_back(tmp_path):
    host = _numpy_inputs(np.float64, shapes=[(4, 4), (2,)])
    opt = fastgd.Adam(host, lr=0.1)
    opt.step([np.ones((4, 4)), np.ones(2)])
    fastgd.save(tmp_path / "h.npz", params=host, optimizer=opt)
    dev = [cp.zeros((4, 4)), cp.zeros(2)]
    o_dev = fastgd.Adam(dev, lr=0.1)
    fastgd.load(tmp_path / "h.npz", params=dev, optimizer=o_dev)
    np.testing.assert_array_equal(dev[0].get(), host[0])
    fastgd.save(tmp_path / "d.npz", params=dev, optimizer=o_dev)
    back = [np.zeros((4, 4)), np.zeros(2)]
    o_back = fastgd.Adam(back, lr=0.1)
    fastgd.load(tmp_path / "d.npz", params=back, optimizer=o_back)
    np.testing.assert_array_equal(back[1], host[1])


def test_changing_hyperparameters_compiles_nothing_new():
    p = [cp.ones(1000, cp.float32)]
    g = [cp.ones(1000, cp.float32)]
    opt = fastgd.Adam(p, lr=1e-3)
    opt.step(g)
    cp.cuda.Device().synchronize()
    from fastgd.kernels.cuda import adam

    built = dict(adam.adam._kernels)
    opt.param_groups[0]["lr"] = 1e-2
    opt.param_groups[0]["betas"] = (0.5, 0.75)
    t0 = time.perf_counter()
    opt.step(g)
    cp.cuda.Device().synchronize()
    assert time.perf_counter() - t0 < 0.05  # a compile takes far longer
    assert adam.adam._kernels == built


def test_step_and_fused_clip_do_not_synchronize():
    flat = fastgd.FlatParams([(1000,), (10,)], xp=cp)
    for g in flat.grads:
        g[...] = 3.0
    opt = fastgd.Adam(flat, lr=0.1)
    opt.step(clip_norm=1.0)  # warm-up: compiles
    cp.cuda.Device().synchronize()
    with cupyx.allow_synchronize(False):
        opt.step()
        opt.step(clip_norm=1.0)
        opt.step(list(flat.grads), grad_scale=0.5)
    expected = float(np.sqrt(1010 * 9.0))
    assert float(opt.last_grad_norm) == pytest.approx(expected, rel=1e-6)


def test_functional_and_clip_on_cupy():
    p, g = cp.ones(5), cp.full(5, 2.0)
    m, v = cp.zeros(5), cp.zeros(5)
    F.adam_(p, g, m, v, step=1, lr=0.1)
    np.testing.assert_allclose(p.get(), 0.9)
    grads = [cp.asarray([3.0, 4.0])]
    norm = fastgd.clip_grad_norm_(grads, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(grads[0].get(), [0.6, 0.8], rtol=1e-6)
    with pytest.raises(TypeError, match="NumPy array, param is a CuPy array"):
        F.adam_(cp.ones(2), np.ones(2), cp.zeros(2), cp.zeros(2), step=1)


def test_mixed_backends_are_refused():
    with pytest.raises(TypeError, match="one optimizer updates arrays of one kind"):
        fastgd.SGD([np.ones(2), cp.ones(2)], lr=0.1)
    p = cp.ones(2)
    opt = fastgd.SGD([p], lr=0.1)
    with pytest.raises(TypeError, match="NumPy array, params"):
        opt.step([np.ones(2)])
    np.testing.assert_array_equal(p.get(), 1.0)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid", "tanh", "softplus",
                                        "gelu", "identity"])
@pytest.mark.parametrize(("output", "loss", "k"), [
    ("regression", "mse", 2), ("regression", "huber", 2), ("binary", None, 1),
    ("multiclass", None, 3),
])
def test_mlp_on_cupy_matches_numpy(activation, output, loss, k):
    from fastgd.models import MLP

    rng = np.random.default_rng(0)
    X = rng.normal(size=(11, 4))
    if output == "multiclass":
        y = rng.integers(0, k, size=11)
    elif output == "binary":
        y = rng.integers(0, 2, size=11).astype(float)
    else:
        y = rng.normal(size=(11, k))
    kw = dict(activation=activation, output=output, loss=loss, l2=0.1, l1=0.05,
              dtype=np.float64, seed=3, huber_delta=0.5)
    host, dev = MLP([4, 7, k], **kw), MLP([4, 7, k], xp=cp, **kw)
    assert isinstance(dev.flat.buffers[np.dtype(np.float64)], cp.ndarray)
    lh = host.loss_and_grad(X, y)
    ld = dev.loss_and_grad(cp.asarray(X), cp.asarray(y))
    assert ld == pytest.approx(lh, rel=1e-10)
    for gd, gh in zip(dev.grads, host.grads):
        np.testing.assert_allclose(gd.get(), gh, rtol=1e-9, atol=1e-12)
    pd = dev.predict(cp.asarray(X))
    assert isinstance(pd, cp.ndarray)
    np.testing.assert_allclose(pd.get(), host.predict(X), rtol=1e-9, atol=1e-12)


def test_fit_on_cupy_matches_numpy():
    from fastgd.models import MLP

    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    runs = []
    for xp in (np, cp):
        model = MLP([5, 8, 3], output="multiclass", seed=0, xp=xp)
        opt = fastgd.Adam(model.flat, lr=0.01)
        hist = fastgd.fit(model, opt, xp.asarray(X), xp.asarray(y), epochs=3, batch_size=16,
                          seed=4, clip_norm=1.0, progress=False)
        params = [p.get() if xp is cp else p for p in model.params]
        runs.append((hist.history["loss"], params, hist.history["accuracy"]))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-4)
    for pd, ph in zip(runs[1][1], runs[0][1]):
        np.testing.assert_allclose(pd, ph, rtol=1e-4, atol=1e-5)
    # the batches' correct predictions, counted on the device (one row may flip on a
    # near tie between the backends' roundings)
    np.testing.assert_allclose(runs[1][2], runs[0][2], atol=1 / 64)


def test_binary_fit_counts_correct_outputs_on_the_device():
    from fastgd.models import MLP

    rng = np.random.default_rng(2)
    X = rng.normal(size=(48, 4)).astype(np.float64)
    y = rng.integers(0, 2, size=(48, 2)).astype(np.float64)
    runs = []
    for xp in (np, cp):
        model = MLP([4, 6, 2], output="multilabel", seed=0, xp=xp)
        hist = fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), xp.asarray(X),
                          xp.asarray(y), epochs=2, batch_size=16, seed=3, progress=False)
        runs.append(hist.history["accuracy"])
    assert runs[1] == runs[0]  # float64: the same predictions, the same counts


def test_nonfinite_skip_and_accumulation_on_cupy():
    p = cp.ones(6)
    opt = fastgd.SGD([p], lr=0.5, nonfinite="skip")
    g = cp.ones(6)
    g[2] = cp.nan
    assert opt.step([g]) is False
    np.testing.assert_array_equal(p.get(), 1.0)
    acc = fastgd.GradientAccumulator(opt, steps=2)
    assert acc.step([cp.full(6, 2.0)]) is None
    assert acc.step([cp.full(6, 4.0)]) is True
    np.testing.assert_allclose(p.get(), 1.0 - 0.5 * 3.0)


def test_clip_value_and_norm_types_on_cupy():
    rng = np.random.default_rng(5)
    host = [rng.normal(size=(7, 3)), rng.normal(size=5)]
    dev = [cp.asarray(h) for h in host]
    for norm_type in (1.0, 3.0, "inf"):
        assert fastgd.clip.grad_norm(dev, norm_type) == pytest.approx(
            fastgd.clip.grad_norm(host, norm_type), rel=1e-12)
    fastgd.clip_grad_value_(dev, 0.4)
    fastgd.clip_grad_value_(host, 0.4)
    for d, h in zip(dev, host):
        np.testing.assert_array_equal(d.get(), h)


def test_gpu_benchmark_table_runs():
    from fastgd import _bench

    lines: list[str] = []
    rows = _bench.report_cuda(["Adam", "SGD"], [4096], rounds=2, out=lines.append)
    assert [r["rule"] for r in rows] == ["Adam", "SGD", "Adam", "SGD", "Adagrad"]
    assert all(r["fastgd_s"] > 0 for r in rows)
    assert lines[0].startswith("GPU: ")


def test_warmup_on_cupy_builds_the_kernels_and_changes_nothing():
    from fastgd.kernels.cuda import adam

    p = cp.asarray(np.arange(6.0, dtype=np.float32))
    opt = fastgd.Adam([p], lr=0.1, amsgrad=True)
    assert opt.warmup() is opt
    np.testing.assert_array_equal(p.get(), np.arange(6.0))
    assert opt.steps_applied == 0 and not opt.state
    assert (("amsgrad", True), ("average", False)) in adam.adam._kernels


@pytest.mark.parametrize(("output", "k"), [("multiclass", 3), ("binary", 1),
                                           ("regression", 2)])
def test_fit_inner_step_does_not_synchronize(output, k):
    from fastgd.models import MLP

    rng = np.random.default_rng(2)
    X = cp.asarray(rng.normal(size=(32, 4)).astype(np.float32))
    y = (rng.integers(0, k, size=32) if output == "multiclass"
         else rng.integers(0, 2, size=32).astype(np.float32) if output == "binary"
         else rng.normal(size=(32, k)).astype(np.float32))
    model = MLP([4, 6, k], output=output, l2=0.01, seed=0, xp=cp)
    opt = fastgd.Adam(model.flat, lr=0.01)
    Xp, yp = model._prepare(X, cp.asarray(y))  # what fit does once
    model._loss_and_grad(Xp[:8], yp[:8])
    opt.step(clip_norm=1.0)  # compiles
    total = 0.0
    with cupyx.allow_synchronize(False):
        for i in range(0, 32, 8):  # fit's inner loop: loss, gradients, clipped step
            total = total + model._loss_and_grad(Xp[i : i + 8], yp[i : i + 8])
            opt.step(clip_norm=1.0)
    assert isinstance(total, cp.ndarray) and np.isfinite(float(total))


def test_bench_command_writes_the_gpu_results_file(tmp_path, capsys):
    from fastgd.cli import main

    out = tmp_path / "RESULTS.md"
    assert main(["bench", "--device", "cuda", "--rules", "Adam", "--sizes", "4096",
                 "--rounds", "2", "--results", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# GPU benchmark results") and "GPU: " in text
    assert "Adam at n=4,096: fraction of the copy bandwidth" in text
    assert "300-tensor FlatParams Adam step vs torch fused" in text
    assert f"wrote {out}" in capsys.readouterr().out


def test_flat_groups_on_cupy():
    flat = fastgd.FlatParams([(3, 2), (2,), (2, 2), (2,)], xp=cp)
    for p in flat.params:
        p[...] = 1.0
    opt = fastgd.SGD([{"params": flat.select([0, 2])},
                      {"params": flat.select([1, 3]), "weight_decay": 0.0}],
                     lr=0.1, weight_decay=0.5)
    assert opt.step()
    np.testing.assert_allclose(flat.params[0].get(), 0.95, rtol=1e-6)
    np.testing.assert_array_equal(flat.params[1].get(), 1.0)


@pytest.mark.parametrize("average", [fastgd.EMA(0.9), fastgd.SWA(start=1)], ids=["ema", "swa"])
def test_weight_averaging_on_cupy_matches_numpy(average):
    init = _numpy_inputs(np.float32)
    host = [a.copy() for a in init]
    dev = [cp.asarray(a) for a in init]
    o_host = fastgd.Adam(host, lr=0.05, average=average)
    o_dev = fastgd.Adam(dev, lr=0.05, average=average)
    rng = np.random.default_rng(3)
    for t in range(6):
        grads = [np.asarray(rng.standard_normal(s), np.float32) for s in SHAPES]
        if t == 2:
            grads[1] = None  # the averaging kernel on its own for this one
        o_host.step(grads)
        with cupyx.allow_synchronize(False):  # the average adds no synchronization
            o_dev.step([None if g is None else cp.asarray(g) for g in grads])
    for d, h in zip(o_dev.averaged(), o_host.averaged()):
        assert isinstance(d, cp.ndarray)
        np.testing.assert_allclose(d.get(), h, **tol(np.float32))
    with o_dev.swap_averaged():
        for p, h in zip(dev, o_host.averaged()):
            np.testing.assert_allclose(p.get(), h, **tol(np.float32))
    wa = fastgd.WeightAverage(dev, average)
    wa.update()
    assert isinstance(wa.averaged[1], cp.ndarray)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_on_cupy_matches_numpy(line_search_fn):
    rng = np.random.default_rng(4)
    scale = rng.uniform(0.5, 2.0, 30)
    x0 = rng.standard_normal(30)

    def run(xp):
        flat = fastgd.FlatParams([(30,)], np.float64, xp=xp)
        (x,), (gx,) = flat.params, flat.grads
        x[...] = xp.asarray(x0)
        s = xp.asarray(scale)

        def closure():
            gx[...] = s * (x - 1.0)
            return float(((x - 1.0) * gx).sum()) / 2

        opt = fastgd.LBFGS(flat, history_size=5, line_search_fn=line_search_fn)
        losses = [opt.step(closure) for _ in range(3)]
        return losses, x

    host_losses, host_x = run(np)
    dev_losses, dev_x = run(cp)
    assert isinstance(dev_x, cp.ndarray)
    np.testing.assert_allclose(dev_losses, host_losses, rtol=1e-10)
    np.testing.assert_allclose(dev_x.get(), host_x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 3.0, "inf"])
def test_mixed_dtype_clipped_step_matches_numpy(norm_type):
    """One device scale per dtype: float32 and float64 parameters in one clipped step."""
    specs = [((7, 3), np.float32), ((11,), np.float64), ((4,), np.float32)]
    rng = np.random.default_rng(5)
    host = [rng.standard_normal(s).astype(dt) for s, dt in specs]
    dev = [cp.asarray(a) for a in host]
    o_host = fastgd.Adam(host, lr=0.1, maximize=True)
    o_dev = fastgd.Adam(dev, lr=0.1, maximize=True)
    for _ in range(3):
        grads = [rng.standard_normal(s).astype(dt) * 5 for s, dt in specs]
        o_host.step(grads, clip_norm=1.0, norm_type=norm_type)
        o_dev.step([cp.asarray(g) for g in grads], clip_norm=1.0, norm_type=norm_type)
    for d, h in zip(dev, host):
        assert d.dtype == h.dtype
        np.testing.assert_allclose(d.get(), h, **tol(np.float32))
    assert float(o_dev.last_grad_norm) == pytest.approx(o_host.last_grad_norm, rel=1e-5)


def test_warmup_reduces_arrays_long_enough_for_cub(monkeypatch):
    from fastgd import _backend

    sizes = []
    real = _backend.reduce
    monkeypatch.setattr(_backend, "reduce",
                        lambda name, x, *a: (sizes.append(x.size), real(name, x, *a))[1])
    fastgd.Adam([cp.ones(3, cp.float32)], lr=0.1).warmup(norm_type=2.0)
    assert sizes and min(sizes) >= 128  # CuPy's CUB reductions start at 128 elements


@pytest.mark.parametrize(("output", "k", "per_batch"), [("multiclass", 3, 1),
                                                        ("regression", 2, 0)])
def test_fit_on_given_batches_reads_the_host_once_per_batch_at_most(output, k, per_batch):
    import sys

    emulation = sys.modules.get("tests.host_cupy")
    if emulation is None:
        pytest.skip("host reads are counted by the emulated CuPy only")
    from fastgd.models import MLP

    rng = np.random.default_rng(3)
    X = cp.asarray(rng.normal(size=(64, 4)).astype(np.float32))
    y = cp.asarray(rng.integers(0, k, size=64) if output == "multiclass"
                   else rng.normal(size=(64, k)).astype(np.float32))
    model = MLP([4, 6, k], output=output, seed=0, xp=cp)
    opt = fastgd.Adam(model.flat, lr=0.01)

    def reads(n_batches):
        def batches(epoch):
            size = 64 // n_batches
            return ((X[i : i + size], y[i : i + size]) for i in range(0, 64, size))

        before = emulation.sync_count
        fastgd.fit(model, opt, batches=batches, epochs=1, progress=False)
        return emulation.sync_count - before

    reads(4)  # compiles
    # the label range of a given batch needs the host (a kernel must not read a label
    # out of range); the loss and the step do not
    assert reads(8) - reads(4) == 4 * per_batch


def _per_array_steps(monkeypatch):
    from fastgd.optim.base import Optimizer

    monkeypatch.setattr(Optimizer, "_update_together", lambda self, plan, *a, **k: plan)
    monkeypatch.setattr(Optimizer, "_step_separate", lambda self, *a: None)


@pytest.mark.parametrize(("name", "options", "step"), [
    ("Adam", {"lr": 0.1, "weight_decay": 0.1}, {}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"clip_norm": 1.0}),
    ("RMSprop", {"lr": 0.01, "centered": True, "average": "ema"}, {}),
])
def test_a_list_of_cupy_arrays_is_one_launch_per_dtype(monkeypatch, name, options, step):
    from fastgd import _backend

    if options.get("average") == "ema":
        options = {**options, "average": fastgd.EMA(0.9)}
    rng = np.random.default_rng(5)
    shapes = [(40_000,), (3, 5), (), (70_000,), (17,)]
    init = [rng.standard_normal(s).astype(np.float32 if k % 2 else np.float64)
            for k, s in enumerate(shapes)]
    steps = [[rng.standard_normal(s).astype(a.dtype) for s, a in zip(shapes, init)]
             for _ in range(3)]
    cls = getattr(fastgd, name)
    dev = [cp.asarray(a) for a in init]
    opt = cls(dev, **options)
    calls, multi = [], []
    real, real_multi = _backend._launch_cuda, _backend._launch_multi_cuda
    monkeypatch.setattr(_backend, "_launch_cuda", lambda *a: calls.append(a[1]) or real(*a))
    monkeypatch.setattr(_backend, "_launch_multi_cuda",
                        lambda *a: multi.append(a[1]) or real_multi(*a))
    opt.step([cp.asarray(g) for g in steps[0]], **step)  # compiles
    calls.clear(), multi.clear()
    for grads in steps[1:]:
        opt.step([cp.asarray(g) for g in grads], **step)
    kernel = multi[0]
    assert multi == [kernel] * 4  # per step, one launch per dtype
    assert kernel not in calls  # no update kernel launched per array
    monkeypatch.undo()
    ref = [cp.asarray(a) for a in init]
    ref_opt = cls(ref, **options)
    _per_array_steps(monkeypatch)
    for grads in steps:
        ref_opt.step([cp.asarray(g) for g in grads], **step)
    for d, r in zip(dev, ref):
        np.testing.assert_allclose(d.get(), r.get(), **tol(r.dtype))


def test_a_multi_array_step_does_not_synchronize():
    rng = np.random.default_rng(6)
    params = [cp.asarray(rng.standard_normal(n).astype(np.float32)) for n in (64, 5000, 70_000)]
    grads = [cp.asarray(rng.standard_normal(p.size).astype(np.float32)) for p in params]
    opt = fastgd.Adam(params, lr=0.01)
    opt.step(grads)  # compiles, builds the address tables
    with cupyx.allow_synchronize(False):
        opt.step(grads)
        opt.step([g * 0.5 for g in grads])  # new gradient arrays: a new table, no sync


@pytest.mark.parametrize("n", [1000, 300_001])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dot_spreads_over_thread_blocks(monkeypatch, n, dtype):
    from fastgd.kernels.cuda import reduce

    from fastgd import _backend

    rng = np.random.default_rng(7)
    x, y = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    rows = []
    real = reduce._RowsReduction._rows
    monkeypatch.setattr(reduce._RowsReduction, "_rows",
                        lambda self, *a: rows.append(a[0].shape) or real(self, *a))
    got = _backend.reduce("dot", cp.asarray(x), cp.asarray(y))
    assert got.shape == (1,)
    want = np.dot(x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(float(got[0]), want, rtol=1e-12)
    # from 2**17 elements: 1024 rows of one block each, the tail on its own
    assert rows == ([(1024, n // 1024)] if n >= reduce._RowsReduction.MIN_SIZE else [])


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("output", "k"), [("multiclass", 6), ("binary", 1), ("multilabel", 3)])
def test_linear_model_on_cupy_matches_the_one_pass_kernel(output, k, weighted):
    # no hidden layer: the CPU's one-pass kernel (five chunks) against its CuPy twin
    from fastgd import _backend
    from tests.helpers import linear_case

    host, X, y, w = linear_case(output, k, 1301, 40, seed=4)
    dev, _, _, _ = linear_case(output, k, 1301, 40, seed=4, xp=cp)
    w = w if weighted else None
    Xh, yh = host._prepare(X, y)
    Xd, yd = dev._prepare(cp.asarray(X), cp.asarray(y))
    ch, cd = np.zeros(1), cp.zeros(1)
    with _backend.all_parallel_kernels():
        assert host._one_pass(Xh)
        lh = host._loss_and_grad(Xh, yh, host._check_weights(w, 1301), ch)
    ld = dev._loss_and_grad(Xd, yd,
                            dev._check_weights(None if w is None else cp.asarray(w), 1301), cd)
    assert float(ld) == pytest.approx(lh, rel=1e-12)
    for gd, gh in zip(dev.grads, host.grads):
        np.testing.assert_allclose(gd.get(), gh, rtol=1e-11, atol=1e-13)
    assert float(cd[0]) == ch[0] > 0


@pytest.mark.parametrize("softmax", [True, False])
def test_linear_xent_twin_sums_its_chunks_to_the_one_chunk_result(softmax):
    # the CPU kernel's chunked layout on the twin: three chunks add up to one
    from fastgd import _backend

    twin = _backend.kernel_rule("nn", "linear_xent", "cuda")
    rng = np.random.default_rng(6)
    n, d, k = 301, 7, 4
    x = cp.asarray(rng.normal(size=(n, d)))
    wt = cp.asarray(rng.normal(size=(k, d)))
    b = cp.asarray(rng.normal(size=k))
    y = (cp.asarray(rng.integers(0, k, n)) if softmax
         else cp.asarray(rng.integers(0, 2, (n, k)).astype(float)))
    sw = cp.asarray(rng.uniform(0.0, 2.0, n))
    out = {}
    for chunks in (1, 3):
        parts = (cp.empty((chunks, k, d)), cp.empty((chunks, k)), cp.empty(chunks),
                 cp.empty(chunks))
        twin((("softmax", softmax),), x, wt, b, y, sw, 1 / n, None, None, *parts)
        out[chunks] = [p.get().sum(axis=0) for p in parts]
    for one, three in zip(out[1], out[3]):
        np.testing.assert_allclose(three, one, rtol=1e-12, atol=1e-14)
    assert out[1][2] > 0  # some correct predictions counted


# Arrays on a GPU other than the current one (two GPUs, or the host emulation's two devices)


def _two_devices():
    return has_gpu() and cp.cuda.runtime.getDeviceCount() >= 2


needs_two = pytest.mark.skipif(not _two_devices(), reason="needs two CUDA devices")


def _on(device, arrays):
    with cp.cuda.Device(device):
        return [cp.asarray(a) for a in arrays]


def _device_of(a):
    return a.device.id


@needs_two
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_optimizer_over_arrays_on_device_1_while_device_0_is_current(name, case, dtype):
    cls, _, options = RULES[name]
    hp = options[case]
    init = _numpy_inputs(dtype, shapes=[(33, 7), (1001,), ()])
    host, dev = [a.copy() for a in init], _on(1, init)
    o_host, o_dev = cls(host, **hp), cls(dev, **hp)
    rng = np.random.default_rng(5)
    assert cp.cuda.Device().id == 0
    for _ in range(3):
        grads = [np.asarray(rng.standard_normal(a.shape), dtype=dtype) for a in init]
        o_host.step(grads)
        o_dev.step(_on(1, grads))
        o_dev.load_state_dict(o_dev.state_dict())  # a state dict round trip, on device 1
    for d, h in zip(dev, host):
        assert _device_of(d) == 1
        np.testing.assert_allclose(d.get(), h, **tol(dtype))
    for st in o_dev.state.values():
        assert all(_device_of(v) == 1 for v in st.values() if isinstance(v, cp.ndarray))


@needs_two
def test_clipped_averaged_accumulated_steps_on_device_1():
    rng = np.random.default_rng(6)
    init = [rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal(7)]
    host, dev = [a.copy() for a in init], _on(1, init)
    o_host = fastgd.Adam(host, lr=0.1, nonfinite="skip", average=fastgd.EMA(0.9))
    o_dev = fastgd.Adam(dev, lr=0.1, nonfinite="skip", average=fastgd.EMA(0.9))
    acc_host = fastgd.GradientAccumulator(o_host, steps=2)
    acc_dev = fastgd.GradientAccumulator(o_dev, steps=2)
    for _ in range(4):
        grads = [rng.standard_normal(a.shape).astype(a.dtype) for a in init]
        acc_host.step(grads)
        acc_dev.step(_on(1, grads))
        grads = [rng.standard_normal(a.shape).astype(a.dtype) for a in init]
        o_host.step(grads, clip_norm=0.5)
        o_dev.step(_on(1, grads), clip_norm=0.5)
    with o_dev.swap_averaged():
        assert all(_device_of(d) == 1 for d in dev)
    wa_host, wa_dev = fastgd.WeightAverage(host, fastgd.EMA(0.5)), fastgd.WeightAverage(
        dev, fastgd.EMA(0.5))
    for _ in range(2):
        wa_host.update()
        wa_dev.update()
    sd = wa_dev.state_dict()
    assert all(_device_of(a) == 1 for a in (*wa_dev.averaged, *sd["averaged"]))
    wa_dev.load_state_dict(sd)
    with wa_dev.swap():
        for d, h in zip(dev, wa_host.averaged):
            np.testing.assert_allclose(d.get(), h, rtol=1e-6)
    for d, h in zip(dev, host):
        assert _device_of(d) == 1
        np.testing.assert_allclose(d.get(), h, rtol=1e-5, atol=1e-6)
    g_dev = _on(1, [np.full((40, 3), 3.0, np.float32), np.full(7, 3.0)])
    norm = fastgd.clip_grad_norm_(g_dev, 1.0)
    assert norm == pytest.approx(3.0 * np.sqrt(127.0), rel=1e-6)
    assert all(_device_of(g) == 1 for g in g_dev)


@needs_two
@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_and_a_flat_buffer_on_device_1(line_search_fn):
    rng = np.random.default_rng(7)
    scale = rng.uniform(0.5, 2.0, 12)
    x0 = rng.standard_normal(12)
    with cp.cuda.Device(1):
        flat = fastgd.FlatParams([(5,), (7,)], dtype=np.float64, xp=cp)
        dscale = cp.asarray(scale)
    with cp.cuda.Device(1):
        flat.buffers[np.dtype(np.float64)][...] = cp.asarray(x0)
    buf, gbuf = flat.buffers[np.dtype(np.float64)], flat.grad_buffers[np.dtype(np.float64)]
    host = [x0.copy()]

    def closure_dev():  # called on the parameters' GPU (device 0 is current outside)
        assert cp.cuda.Device().id == 1
        gbuf[...] = dscale * buf
        return float(0.5 * (gbuf * buf).sum())

    def closure_host():
        g = scale * host[0]
        return 0.5 * float(g @ host[0]), [g]

    flat.zero_grad()  # device 0 is current
    flat.select([1]).zero_grad()
    o_dev = fastgd.LBFGS(flat, history_size=4, max_iter=6, line_search_fn=line_search_fn)
    o_host = fastgd.LBFGS(host, history_size=4, max_iter=6, line_search_fn=line_search_fn)
    for _ in range(2):
        o_dev.step(closure_dev)
        o_host.step(closure_host)
    assert _device_of(buf) == 1
    np.testing.assert_allclose(buf.get(), host[0], rtol=1e-10, atol=1e-12)
    sd = o_dev.state_dict()
    assert sd["state"][0]["old_dirs"].shape[0] > 0
    o_dev.load_state_dict(sd)  # the history back into buffers on device 1
    o_host.load_state_dict(o_host.state_dict())
    o_dev.step(closure_dev)
    o_host.step(closure_host)
    np.testing.assert_allclose(buf.get(), host[0], rtol=1e-10, atol=1e-12)
    assert _device_of(o_dev.state[0]["old_dirs"][0]) == 1


@needs_two
def test_mlp_on_device_1_trains_while_device_0_is_current():
    from fastgd.models import MLP

    rng = np.random.default_rng(8)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    host = MLP([5, 8, 3], output="multiclass", seed=0, l2=0.01)
    with cp.cuda.Device(1):
        dev = MLP([5, 8, 3], output="multiclass", seed=0, l2=0.01, xp=cp)
    Xd, yd = _on(1, [X, y])
    lh = host.loss_and_grad(X, y)
    ld = dev.loss_and_grad(Xd, yd)
    assert ld == pytest.approx(lh, rel=1e-5)
    for gd, gh in zip(dev.grads, host.grads):
        assert _device_of(gd) == 1
        np.testing.assert_allclose(gd.get(), gh, rtol=1e-4, atol=1e-6)
    opt = fastgd.Adam(dev.flat, lr=0.01)
    hist = fastgd.fit(dev, opt, Xd, yd, epochs=2, batch_size=16, seed=0, progress=False)
    assert np.isfinite(hist.history["loss"]).all()
    pred = dev.predict(Xd)
    assert pred.shape == (64,) and _device_of(pred) == 1 and cp.cuda.Device().id == 0


def test_dense_to_csr_twin_matches_the_cpu_kernel():
    from fastgd import _backend

    rng = np.random.default_rng(4)
    X = rng.normal(size=(9, 6)) * (rng.random((9, 6)) < 0.4)
    X[2] = 0.0
    dense_at = np.array([-1, 0, -1, -1, 1, -1])
    entries = np.count_nonzero(X)
    outs = []
    for xp in (np, cp):
        args = [xp.asarray(X), xp.asarray(dense_at), xp.zeros(10, np.int64),
                xp.zeros(entries, np.int64), xp.zeros(entries), xp.zeros((9, 2))]
        _backend.launch_sized(X.size, "nn", "dense_to_csr", (), *args)
        outs.append([a.get() if xp is cp else a for a in args[2:]])
    kept = int(outs[0][0][-1])
    assert 0 < kept < entries
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(b[:kept] if b.ndim == 1 and b.size == entries else b,
                                      a[:kept] if a.ndim == 1 and a.size == entries else a)
    np.testing.assert_array_equal(outs[1][3], X[:, [1, 4]])
