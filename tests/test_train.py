"""The training loop: gradient-descent variants, shuffling, validation, stopping rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastgd
from fastgd.models import MLP, LinearRegression, LogisticRegression
from fastgd.schedules import ReduceLROnPlateau
from tests.helpers import assert_unchanged, snapshot


def _blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 0.8).astype(np.int64)
    return X, y


@pytest.mark.parametrize("batch_size", [None, 1, 16])
def test_batch_stochastic_and_minibatch_descent_reduce_the_loss(batch_size):
    X, y = _blobs(120)
    model = MLP([5, 16, 3], output="multiclass", seed=0)
    lr = {None: 0.1, 1: 0.002, 16: 0.01}[batch_size]
    hist = fastgd.fit(model, fastgd.Adam(model.flat, lr=lr), X, y, epochs=15,
                      batch_size=batch_size, seed=0, progress=False)
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    assert hist.steps == 15 * {None: 1, 1: 120, 16: 8}[batch_size]
    assert len(hist["time"]) == 15 and hist["accuracy"][-1] > 0.75


def test_seeded_shuffling_is_reproducible():
    X, y = _blobs()
    runs = []
    for seed in (3, 3, 4):
        model = MLP([5, 8, 3], output="multiclass", seed=0)
        runs.append(fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), X, y, epochs=3,
                               batch_size=10, seed=seed, progress=False)["loss"])
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_batches_function_for_out_of_memory_data():
    X, y = _blobs()
    model = LogisticRegression(5, 3, seed=0)
    calls = []

    def batches(epoch):
        calls.append(epoch)
        for i in range(0, len(X), 50):
            yield X[i : i + 50], y[i : i + 50]

    hist = fastgd.fit(model, fastgd.Adam(model.flat, lr=0.05), batches=batches, epochs=4,
                      progress=False)
    assert calls == [0, 1, 2, 3] and hist.steps == 24
    assert hist["loss"][-1] < hist["loss"][0]


def test_validation_early_stopping_restores_the_best_parameters():
    X, y = _blobs(200)
    Xv, yv = _blobs(100, seed=1)
    model = MLP([5, 32, 3], output="multiclass", seed=0)
    snaps = []
    hist = fastgd.fit(model, fastgd.Adam(model.flat, lr=0.3), X, y, epochs=40, batch_size=8,
                      seed=0, validation_data=(Xv, yv), progress=False,
                      early_stopping=fastgd.EarlyStopping(patience=2),
                      callbacks=[lambda e, logs: snaps.append(model.flat.buffers[
                          np.dtype(np.float32)].copy())])
    assert hist.stopped_early and "val_loss" in hist.stopped_early
    best = int(np.argmin(hist["val_loss"]))
    assert best < hist.epochs - 1
    np.testing.assert_array_equal(model.flat.buffers[np.dtype(np.float32)], snaps[best])
    assert "val_accuracy" in hist.history


def test_loss_tolerance_step_budget_and_callback_stop():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    model = LinearRegression(3, dtype=np.float64, seed=0)
    hist = fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), X, y, epochs=500,
                      batch_size=None, loss_tol=1e-6, progress=False)
    assert hist.stopped_early.startswith("loss") and hist["loss"][-1] <= 1e-6
    np.testing.assert_allclose(model.params[0].ravel(), [1.0, -2.0, 0.5], atol=1e-2)
    m2 = LinearRegression(3, dtype=np.float64, seed=0)
    h2 = fastgd.fit(m2, fastgd.SGD(m2.flat, lr=0.1), X, y, epochs=50, batch_size=8,
                    max_steps=20, progress=False)
    assert h2.steps == 20 and h2.epochs == 3
    m3 = LinearRegression(3, dtype=np.float64, seed=0)
    h3 = fastgd.fit(m3, fastgd.SGD(m3.flat, lr=0.1), X, y, epochs=50, progress=False,
                    callbacks=[lambda e, logs: e == 1])
    assert h3.epochs == 2 and "callback" in h3.stopped_early


def test_plateau_and_clipping_plug_in():
    X, y = _blobs()
    model = MLP([5, 8, 3], output="multiclass", seed=0)
    opt = fastgd.SGD(model.flat, lr=0.5)
    plateau = ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=10.0)
    hist = fastgd.fit(model, opt, X, y, epochs=3, batch_size=50, clip_norm=0.1,
                      plateau=plateau, progress=False)
    assert hist["lr"] == [0.5, 0.25, 0.125]  # the lr each epoch ran with
    assert opt.param_groups[0]["lr"] == 0.0625
    assert opt.last_grad_norm is not None


def test_no_progress_output_when_not_a_terminal(capsys):
    X, y = _blobs(50)
    model = LogisticRegression(5, 3, seed=0)
    fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), X, y, epochs=2)
    assert capsys.readouterr().err == ""
    fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), X, y, epochs=1, verbose=True)
    assert "epoch 1/1 loss=" in capsys.readouterr().out


@pytest.mark.parametrize(("kw", "match"), [
    ({"epochs": 0}, "epochs must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"y": np.zeros(3, np.int64)}, "X has 300 rows, y has 3"),
    ({"y": np.full(300, 7)}, "class labels must be in"),
])
def test_bad_arguments_raise_before_any_step(kw, match):
    X, y = _blobs()
    model = MLP([5, 4, 3], output="multiclass", seed=0)
    before = snapshot(list(model.params))
    args = {"X": X, "y": y, **kw}
    with pytest.raises(ValueError, match=match):
        fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), progress=False, **args)
    assert_unchanged(before, list(model.params))


def test_row_gather_kernel_matches_numpy_serial_and_parallel():
    from fastgd import _backend

    rng = np.random.default_rng(0)
    for n, d in ((50, 3), (40_000, 7)):  # below and above the parallel threshold
        src = rng.normal(size=(n, d)).astype(np.float32)
        idx = rng.permutation(n)
        dst = np.empty_like(src)
        _backend.launch("gather", "gather_rows", (), src, idx, _backend.NO_ROWS, dst)
        np.testing.assert_array_equal(dst, src[idx])
    # the rows prefetched ahead of the copy: batches shorter and longer than the distance,
    # float64 rows of many cache lines, int32 indices, a Fortran-ordered source
    from fastgd.kernels.cpu.gather import PREFETCH_ROWS

    src = rng.normal(size=(3000, 131))
    for rows, idx_dtype, order in ((3, np.int64, "C"), (PREFETCH_ROWS, np.int64, "C"),
                                   (PREFETCH_ROWS + 1, np.int32, "C"), (200, np.int64, "F")):
        s = np.asarray(src, order=order)
        idx = rng.choice(3000, rows, replace=False).astype(idx_dtype)
        dst = np.empty((rows, 131))
        _backend.launch("gather", "gather_rows", (), s, idx, _backend.NO_ROWS, dst)
        np.testing.assert_array_equal(dst, src[idx])
    # the next batch's rows prefetched after the copy: the same copy, on either build
    for mode in (fastgd.serial_kernels, _backend.all_parallel_kernels):
        idx, ahead = rng.choice(3000, 200, replace=False), rng.choice(3000, 150)
        dst = np.empty((200, 131))
        with mode():
            _backend.launch("gather", "gather_rows", (), src, idx, ahead, dst)
        np.testing.assert_array_equal(dst, src[idx])


def test_shuffled_batches_prefetch_the_next_batch_rows(monkeypatch):
    from fastgd import _backend

    X, y = _blobs(103)
    seen = []
    real = _backend.launch

    def recording(module, name, flags, *args):
        if name == "gather_rows" and args[0].shape[1] == X.shape[1]:
            seen.append((args[1].copy(), np.asarray(args[2]).copy()))
        return real(module, name, flags, *args)

    monkeypatch.setattr(_backend, "launch", recording)
    model = MLP([5, 8, 3], output="multiclass", seed=0)
    fastgd.fit(model, fastgd.Adam(model.flat, lr=0.01), X, y, epochs=1, batch_size=16,
               shuffle=True, seed=1, verbose=False)
    assert len(seen) == 7  # 103 rows in batches of 16
    for (_, ahead), (rows, _) in itertools.pairwise(seen):
        np.testing.assert_array_equal(ahead, rows)
    assert seen[-1][1].size == 0


def test_shuffled_epoch_equals_the_manual_loop_over_the_permutation():
    X, y = _blobs(103)  # the last batch is partial
    fitted, manual = (MLP([5, 8, 3], output="multiclass", seed=0) for _ in range(2))
    opt_f, opt_m = fastgd.Adam(fitted.flat, lr=0.01), fastgd.Adam(manual.flat, lr=0.01)
    hist = fastgd.fit(fitted, opt_f, X, y, epochs=2, batch_size=16,
                      seed=np.random.default_rng(5), progress=False)
    rng = np.random.default_rng(5)
    losses = []
    for _ in range(2):
        perm = rng.permutation(103)
        total = 0.0
        for i in range(0, 103, 16):
            rows = perm[i : i + 16]
            total += manual.loss_and_grad(X[rows], y[rows])
            opt_m.step()
        losses.append(total / 7)
    for a, b in zip(fitted.params, manual.params):
        np.testing.assert_array_equal(a, b)
    assert hist["loss"] == pytest.approx(losses, rel=1e-12)


@pytest.mark.parametrize(("output", "k"), [("multiclass", 3), ("binary", 1),
                                           ("multilabel", 2)])
def test_accuracy_is_the_mean_over_the_epochs_batches_before_their_updates(output, k):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(103, 5)).astype(np.float32)
    y = (rng.integers(0, k, 103) if output == "multiclass"
         else rng.integers(0, 2, (103, k)).astype(np.float32))
    fitted, manual = (MLP([5, 8, k], output=output, seed=0) for _ in range(2))
    opt_f, opt_m = fastgd.Adam(fitted.flat, lr=0.05), fastgd.Adam(manual.flat, lr=0.05)
    hist = fastgd.fit(fitted, opt_f, X, y, epochs=3, batch_size=16,
                      seed=np.random.default_rng(5), progress=False)
    rng = np.random.default_rng(5)
    accuracy = []
    for _ in range(3):
        perm = rng.permutation(103)
        right = 0
        for i in range(0, 103, 16):
            rows = perm[i : i + 16]
            pred = manual.predict(X[rows]).reshape(y[rows].shape)  # before the step
            right += int((pred == y[rows]).sum())
            manual.loss_and_grad(X[rows], y[rows])
            opt_m.step()
        accuracy.append(right / (103 if output == "multiclass" else 103 * k))
    for a, b in zip(fitted.params, manual.params):
        np.testing.assert_array_equal(a, b)
    assert hist["accuracy"] == accuracy
    assert len(set(accuracy)) > 1  # it changes from epoch to epoch: not a constant


@pytest.mark.parametrize("shuffle", [True, False])
def test_mostly_zero_X_trains_on_the_csr_kernels_to_the_same_model(shuffle, monkeypatch):
    from fastgd import _backend
    from fastgd.models import mlp

    rng = np.random.default_rng(3)
    X = rng.normal(size=(203, 40))
    X[rng.random(X.shape) > 0.15] = 0.0  # 15 % nonzero
    y = rng.integers(0, 3, 203)
    calls = []
    real = _backend.launch_sized
    monkeypatch.setattr(_backend, "launch_sized",
                        lambda size, module, name, *a: calls.append(name)
                        or real(size, module, name, *a))
    hists, params = [], []
    for density in (mlp.SPARSE_DENSITY, {1: 0.0, 2: 0.0}):  # the CSR path, the dense one
        monkeypatch.setattr(mlp, "SPARSE_DENSITY", density)
        calls.clear()
        model = MLP([40, 16, 3], output="multiclass", seed=0, dtype=np.float64)
        hists.append(fastgd.fit(model, fastgd.Adam(model.flat, lr=0.01), X, y, epochs=3,
                                batch_size=32, shuffle=shuffle, seed=1, progress=False))
        params.append([p.copy() for p in model.params])
        assert ({"csr_matmul", "csr_tmatmul"} <= set(calls)) == (len(params) == 1)
    for a, b in zip(*params):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert hists[0]["loss"] == pytest.approx(hists[1]["loss"], rel=1e-12)
    assert hists[0]["accuracy"] == hists[1]["accuracy"]


def test_fit_scores_no_pass_over_the_training_data(monkeypatch):
    X, y = _blobs(200)
    model = MLP([5, 8, 3], output="multiclass", seed=0)
    rows = []
    real, compiled = MLP._forward, MLP._compiled_loss_and_grad
    monkeypatch.setattr(MLP, "_forward", lambda self, a: rows.append(len(a)) or real(self, a))
    monkeypatch.setattr(MLP, "_compiled_loss_and_grad",  # its forward pass is compiled in
                        lambda self, X, *a: rows.append(len(X)) or compiled(self, X, *a))
    fastgd.fit(model, fastgd.Adam(model.flat, lr=0.01), X, y, epochs=2, batch_size=50,
               progress=False)
    assert rows == [50] * 8  # the training batches, and no forward pass over all rows


def test_fit_never_copies_the_training_data_whole():
    import tracemalloc

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 50)).astype(np.float32)  # 8 MB
    y = rng.integers(0, 3, size=40_000)
    model = LogisticRegression(50, 3, seed=0)
    opt = fastgd.SGD(model.flat, lr=0.01)
    fastgd.fit(model, opt, X, y, epochs=1, batch_size=256, progress=False)  # compiles
    tracemalloc.start()
    try:
        fastgd.fit(model, opt, X, y, epochs=1, batch_size=256, seed=0, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 4, peak  # the permutation (320 kB) and batch buffers only


def _reg(n=64, d=3, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    return X, (X @ np.arange(1.0, d + 1)).astype(dtype)


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"X": _with(_reg()[0], (3, 1), np.nan)}, ValueError, "X contains NaN or infinity"),
    ({"y": _with(_reg()[1], 5, np.inf)}, ValueError, "y contains NaN or infinity"),
    ({"X": _with(_reg()[0], (0, 0), 1e39), "dtype": np.float32}, ValueError,
     r"X contains NaN or infinity \(after conversion to float32\)"),
    ({"validation_data": (np.ones((4, 2)), np.ones(4))}, ValueError,
     r"X must have shape \(n, 3\)"),
    ({"validation_data": (_with(_reg()[0], (0, 0), np.nan), _reg()[1])}, ValueError,
     "validation_data X contains NaN"),
    ({"validation_data": np.ones(3)}, ValueError, "validation_data must be a pair"),
    ({"early_stopping": fastgd.EarlyStopping(monitor="val_loss")}, ValueError,
     "early stopping monitors 'val_loss', which this fit does not log"),
    ({"early_stopping": fastgd.EarlyStopping(monitor="accuracy")}, ValueError,
     "monitors 'accuracy'"),
    ({"max_steps": 0}, ValueError, "max_steps must be an integer >= 1"),
    ({"loss_tol": float("nan")}, ValueError, "Invalid loss_tol value: nan"),
    ({"clip_norm": -1.0}, ValueError, "Invalid clip_norm value"),
    ({"X": np.float64(3.0)}, ValueError, "one row per sample"),
    ({"y": np.float64(3.0)}, ValueError, "one row per sample"),
    ({"callbacks": [3]}, TypeError, r"callbacks\[0\] must be callable"),
    ({"plateau": 0.5}, TypeError, "plateau must be"),
])
def test_bad_data_and_arguments_raise_before_any_step(kw, exc, match):
    X, y = _reg()
    kw = dict(kw)
    dtype = kw.pop("dtype", np.float64)
    model = LinearRegression(3, dtype=dtype, seed=0)
    opt = fastgd.Adam(model.flat, lr=0.01)
    before = snapshot(list(model.params), opt)
    args = {"X": X, "y": y, **kw}
    with pytest.raises(exc, match=match):
        fastgd.fit(model, opt, epochs=3, batch_size=16, progress=False, **args)
    assert_unchanged(before, list(model.params), opt)


def test_sparse_X_is_refused_with_a_clear_error():
    sp = pytest.importorskip("scipy.sparse")
    X, y = _reg()
    model = LinearRegression(3, dtype=np.float64, seed=0)
    with pytest.raises(TypeError, match=r"X is a scipy.sparse csr_matrix.*X.toarray\(\)"):
        fastgd.fit(model, fastgd.SGD(model.flat, lr=0.1), sp.csr_matrix(X), y,
                   progress=False)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_diverging_training_is_an_error_and_restores_the_model():
    X, y = _reg()
    X = X * 1e150  # squared errors overflow float64 within a few steps
    model = LinearRegression(3, dtype=np.float64, seed=0)
    opt = fastgd.SGD(model.flat, lr=1.0)
    before = snapshot(list(model.params), opt)
    with pytest.raises(ValueError, match=r"training diverged: the loss is .* after epoch 1"):
        fastgd.fit(model, opt, X, y, epochs=5, batch_size=16, progress=False)
    assert_unchanged(before, list(model.params), opt)
    assert opt.steps_applied == 0


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_diverging_parameters_with_a_finite_last_loss_are_caught():
    X, y = _reg(n=16)
    model = LinearRegression(3, dtype=np.float64, seed=0)
    opt = fastgd.SGD(model.flat, lr=1e308)  # one full-batch step: finite loss, inf weights
    with pytest.raises(ValueError, match="training diverged"):
        fastgd.fit(model, opt, X, y, epochs=1, batch_size=None, progress=False)
    assert all(np.isfinite(p).all() for p in model.params)
