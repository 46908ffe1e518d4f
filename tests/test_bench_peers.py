"""The benchmarks' NumPy peers compute their rules: the "vs numpy" figures rest on them."""

from __future__ import annotations

import numpy as np
import pytest

from fastgd._bench.peers import PEERS, benchmark_hyperparameters, numpy_step
from fastgd.optim.registry import RULES
from tests import reference as R
from tests.reference import ReferenceOptimizer

WITH_PEER = [name for name, rule in RULES.items() if rule.numpy_peer is not None]


def test_every_peer_belongs_to_a_rule():
    assert {rule.numpy_peer for rule in RULES.values()} - {None} == set(PEERS)


@pytest.mark.parametrize("name", WITH_PEER)
def test_peer_matches_the_reference_at_its_benchmark_configuration(name):
    rule = RULES[name]
    rng = np.random.default_rng(0)
    p = rng.standard_normal(257)
    r = p.copy()
    g = np.empty_like(p)
    step = numpy_step(name, p, g)
    ref = ReferenceOptimizer(getattr(R, rule.reference), [r], **benchmark_hyperparameters(name))
    for t in range(8):  # past RAdam's rectification threshold (step 6)
        g[...] = rng.standard_normal(257)
        step()
        ref.step([g.copy()])
        np.testing.assert_allclose(p, r, rtol=1e-12, atol=1e-14, err_msg=f"step {t}")
    assert not np.array_equal(p, rng.standard_normal(257))


def test_sklearn_peer_runs_at_the_thread_setting_it_is_named_for():
    pytest.importorskip("sklearn")
    from threadpoolctl import threadpool_info

    from fastgd._bench import workloads as W

    class Probe:
        def fit(self, X, y):
            self.threads = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
            return self

    outside = {i["internal_api"]: i["num_threads"] for i in threadpool_info()}
    assert W.fit_estimator(Probe(), None, None, "sklearn-1thread").threads == {
        api: 1 for api in outside}
    assert W.fit_estimator(Probe(), None, None, "sklearn").threads == outside
    assert {i["internal_api"]: i["num_threads"] for i in threadpool_info()} == outside


def test_estimator_report_compares_with_the_faster_sklearn_at_one_optimum(monkeypatch):
    pytest.importorskip("sklearn")
    from fastgd._bench import reports
    from fastgd._bench import workloads as W

    monkeypatch.setattr(W, "ESTIMATOR_DATA", ("digits",))
    monkeypatch.setattr(W, "MLP_EPOCHS", {"digits": 2})
    lines = []
    rows = reports.report_estimators(rounds=1, out=lines.append)
    assert [(r["kind"], r["data"]) for r in rows] == [("mlp", "digits"), ("logistic", "digits")]
    for r in rows:
        both = (r["sklearn_all_threads_s"], r["sklearn_1thread_s"])
        assert r["sklearn_s"] == min(both)
        assert r["sklearn_threads"] == ("1" if both[1] < both[0] else "all")
    assert rows[0]["acc_fastgd"] == rows[0]["acc_sklearn"]  # the MLPs fit one model
    assert rows[0]["acc_fastgd_all_threads"] == rows[0]["acc_fastgd"]  # n_jobs=-1 too
    assert rows[0]["fastgd_all_threads_s"] > 0 and rows[1]["fastgd_all_threads_s"] is None
    assert rows[1]["acc_fastgd"] > 0.9 and rows[1]["acc_sklearn"] > 0.9
    # at the benchmark's tolerance both logistic fits reach one optimum
    assert abs(rows[1]["objective_rel"]) < 1e-6
    assert any("LogisticRegression" in line and "digits" in line for line in lines)


def test_settings_report_compares_with_the_faster_sklearn():
    pytest.importorskip("sklearn")
    from fastgd._bench import reports

    lines = []
    rows = reports.report_settings(rounds=1, out=lines.append,
                                   settings=["mlp partial_fit", "logistic binary"])
    assert [(r["setting"], r["method"]) for r in rows] == [
        ("mlp partial_fit", "partial_fit"), ("logistic binary", "fit")]
    for r in rows:
        both = (r["sklearn_all_threads_s"], r["sklearn_1thread_s"])
        assert r["sklearn_s"] == min(both) and r["fastgd_s"] > 0
        assert r["sklearn_threads"] == ("1" if both[1] < both[0] else "all")
        assert any(line.startswith(r["setting"]) for line in lines)


def test_every_setting_builds_the_same_estimator_in_both_libraries():
    pytest.importorskip("sklearn")
    import scipy.sparse as sp

    from fastgd import sklearn as ours
    from fastgd._bench import workloads as W

    sets = {data for _, data, _, _ in W.ESTIMATOR_SETTINGS.values()}
    shapes = {name: W.setting_data(name)[0].shape for name in sets}
    assert shapes["digits-200"] == (200, 64) and shapes["regression"] == (100_000, 50)
    assert sp.issparse(W.setting_data("sparse")[0])
    for name, (cls, data, params, method) in W.ESTIMATOR_SETTINGS.items():
        X, y = W.setting_data(data)
        assert X.shape[0] == y.shape[0], name
        peer_mod = "neural_network" if cls.startswith("MLP") else "linear_model"
        peer = getattr(__import__(f"sklearn.{peer_mod}", fromlist=[cls]), cls)(**params)
        mine = getattr(ours, cls)(**params)
        theirs = peer.get_params()
        assert {k: v for k, v in mine.get_params().items() if k in theirs} == theirs, name
        assert callable(getattr(mine, method)), name


def test_linear_eval_workloads_compute_one_loss():
    """The one-pass benchmark times the same evaluation on each path: equal losses."""
    from fastgd._bench.workloads import LINEAR_SHAPES, linear_eval

    assert LINEAR_SHAPES["digits"] == (1437, 64)
    losses = {impl: linear_eval("digits", impl)()
              for impl in ("one-pass", "one-pass-1thread", "blas", "blas-2threads")}
    assert all(np.isfinite(v) and v > 0 for v in losses.values())
    for impl, v in losses.items():
        assert v == pytest.approx(losses["blas"], rel=1e-12), impl
    with pytest.raises(ValueError, match="impl"):
        linear_eval("digits", "bogus")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_elementwise_kernel_peers_compute_the_kernels_values(dtype):
    from fastgd._bench.workloads import ELEMENTWISE_KERNELS, elementwise

    tol = 2e-5 if dtype == "float32" else 1e-12
    for kernel in ELEMENTWISE_KERNELS:
        ours, numpy = elementwise(kernel, dtype, "fastgd"), elementwise(kernel, dtype, "numpy")
        ours()
        numpy()
        assert ours.out.dtype == np.dtype(dtype)
        np.testing.assert_allclose(ours.out, numpy.out, rtol=tol, atol=tol * 1e-2,
                                   err_msg=kernel)
        assert np.abs(ours.out).max() > 0


@pytest.mark.parametrize("model", ["mlp-100", "mlp-784"])
def test_gemm_floor_times_the_model_steps_matmuls_on_finite_data(model, monkeypatch):
    # the "x floor" column: the floor must run the same products as fastgd's step, on
    # initialized data (an empty buffer's inf / NaN / subnormals would time something else)
    from fastgd._bench import workloads as W
    from fastgd.models.mlp import MLP

    # the step's compiled pass calls NumPy's BLAS directly, with the Python pass's products
    # (tests/test_models.py): the Python pass shows them to np.matmul's spy
    monkeypatch.setattr(MLP, "_compiled_pass", lambda self, X: False)
    shape = W.MLP_SHAPES[model]
    seen: dict[str, list] = {"gemm": [], "fastgd": []}
    matmul = np.matmul
    for impl in seen:
        fn = W.model_step(shape, impl)

        def spy(a, b, *args, impl=impl, **kwargs):
            out = matmul(a, b, *args, **kwargs)
            seen[impl].append((a.shape, b.shape, bool(np.isfinite(out).all())))
            return out

        monkeypatch.setattr(np, "matmul", spy)
        with np.errstate(all="raise"):
            fn()
            fn()
        monkeypatch.setattr(np, "matmul", matmul)
    assert len(seen["gemm"]) == 2 * (3 * (len(shape) - 1) - 1)  # forward, weights, deltas
    assert sorted(seen["gemm"]) == sorted(seen["fastgd"])
    assert all(finite for _, _, finite in seen["gemm"])


def test_isolated_runs_interleave_the_processes_and_drop_missing_peers(monkeypatch):
    from fastgd._bench import timing

    calls = []
    values = {"fastgd": [1.0, 3.0, 2.0], "torch": [None, None, None],
              "sklearn": [5.0, float("nan"), 4.0]}

    def fake(workload, impl, rounds):
        calls.append((workload, impl, rounds))
        return values[impl][sum(1 for c in calls if c[1] == impl) - 1]

    monkeypatch.setattr(timing, "isolated", fake)
    runs = timing.isolated_runs("mlp-100", ("fastgd", "torch", "sklearn"), 5, 3)
    assert [c[1] for c in calls] == ["fastgd", "torch", "sklearn"] * 3  # in turn
    assert all(c[0] == "mlp-100" and c[2] == 5 for c in calls)
    assert runs == {"fastgd": [1.0, 3.0, 2.0], "sklearn": [5.0, 4.0]}  # no torch, no NaN


def test_first_layer_workloads_compute_the_same_products():
    pytest.importorskip("sklearn")
    from fastgd._bench.workloads import FIRST_LAYER_IMPLS, first_layer

    # the digits (no mlxtend needed): 39 of their 64 columns are dense, so the split runs
    calls = {impl: first_layer(impl, data="digits") for impl in FIRST_LAYER_IMPLS}
    for fn in calls.values():
        fn()  # the same first batch for each
    out, grad = (a.copy() for a in calls["gemm"].out)
    assert np.abs(out).max() > 0 and np.abs(grad).max() > 0
    for impl in ("csr", "csr-split"):
        np.testing.assert_allclose(calls[impl].out[0], out, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(calls[impl].out[1], grad, rtol=1e-12, atol=1e-12)
    for fn in calls.values():
        fn()  # the next batch: another one
    assert not np.allclose(calls["gemm"].out[0], out)
    with pytest.raises(ValueError, match="unknown impl"):
        first_layer("dense")
