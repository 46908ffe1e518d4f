"""Optimizer step benchmarks: fastgd vs careful in-place NumPy vs torch, plus axpy.

Run: ``pytest bench/ --benchmark-only`` (add ``-k Adam`` to narrow). The summary at the end
prints GB/s, the fraction of the axpy bandwidth and the speed-ups, all from this run.
"""

from __future__ import annotations

import pytest

from fastgd import _bench
from fastgd.optim.registry import generic

IMPLS = ("fastgd", "numpy", "torch")


@pytest.mark.parametrize("n", _bench.SIZES)
def test_axpy(benchmark, n):
    fn = _bench.axpy(n)
    fn()
    benchmark.group = f"n={n}"
    benchmark.extra_info.update(suite="single", rule="axpy", n=n, impl="axpy", bytes=12 * n)
    benchmark(fn)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", _bench.SIZES)
@pytest.mark.parametrize("rule", generic())
def test_step(benchmark, rule, n, impl):
    fn = _bench.single(rule, n, impl)
    if fn is None:
        pytest.skip(f"no {impl} peer for {rule}")
    fn()
    benchmark.group = f"n={n}"
    benchmark.extra_info.update(suite="single", rule=rule, n=n, impl=impl,
                                bytes=_bench.bytes_per_step(rule, n))
    benchmark(fn)


@pytest.mark.parametrize("impl", ("fastgd", "fastgd-list", "fastgd-views", "torch"))
@pytest.mark.parametrize("rule", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_model_300_tensors(benchmark, rule, impl):
    fn = _bench.model(rule, impl)
    if fn is None:
        pytest.skip(f"no {impl} peer")
    fn()
    benchmark.group = "300 tensors"
    benchmark.extra_info.update(suite="model", rule=rule, n=2_000_000, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ("fastgd", "fastgd-list", "torch"))
def test_accumulate_300_tensors(benchmark, impl):
    # one micro-batch of four: the gradients added to the sums, every fourth an Adam step
    fn = _bench.accumulated(impl)
    if fn is None:
        pytest.skip("torch not installed")
    for _ in range(4):
        fn()
    benchmark.group = "gradient accumulation, 300 tensors, 4 micro-batches a step"
    benchmark.extra_info.update(suite="accumulate", rule="Adam", n=2_000_000, impl=impl)
    benchmark.pedantic(fn, rounds=40, iterations=4)


@pytest.mark.parametrize("impl", ("fused", "separate", "torch"))
def test_step_with_weight_average(benchmark, impl):
    n = 1_000_000
    fn = _bench.averaged(n, impl)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = "Adam + EMA of the weights, n=1e6"
    benchmark.extra_info.update(suite="average", rule="Adam", n=n, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ("fastgd", "torch"))
def test_muon_matrix(benchmark, impl):
    fn = _bench.muon(impl)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = "Muon 1024 x 1024 float32"
    benchmark.extra_info.update(suite="muon", rule="Muon", n=1024 * 1024, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ("fastgd", "torch"))
def test_lbfgs_iterations(benchmark, impl):
    fn = _bench.lbfgs(impl)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = "LBFGS 10 iterations, history 20, n=1e6 float64"
    benchmark.extra_info.update(suite="lbfgs", rule="LBFGS", n=1_000_000, impl=impl)
    benchmark.pedantic(fn, rounds=7, iterations=1)


@pytest.mark.parametrize("impl", ("fastgd", "torch"))
@pytest.mark.parametrize("n", [1, 1000])
def test_step_overhead(benchmark, n, impl):
    fn = _bench.single("Adam", n, impl)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = "opt.step overhead"
    benchmark.extra_info.update(suite="overhead", rule="Adam", n=n, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ("fastgd", "fastgd-list", "fastgd-list-new", "fastgd-views",
                                  "torch"))
def test_step_overhead_300_arrays(benchmark, impl):
    # 300 arrays of 4 elements: the per-step cost of a 300-array model beside its kernel
    fn = _bench.model("Adam", impl, sizes=_bench.OVERHEAD_SIZES)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = "opt.step overhead, 300 arrays of 4"
    benchmark.extra_info.update(suite="overhead", rule="Adam", n=4, arrays=300, impl=impl)
    benchmark(fn)
