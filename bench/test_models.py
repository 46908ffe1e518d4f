"""Model benchmarks: an MLP training step against torch, scikit-learn and the GEMM floor
(the same forward and backward matmuls alone), and a multinomial logistic-regression epoch.

``fastgd bench --models`` prints the same as one table.
"""

from __future__ import annotations

import pytest

from fastgd import _bench
from fastgd._bench.workloads import MLP_SHAPES


@pytest.mark.parametrize("impl", ["fastgd", "gemm", "torch", "sklearn"])
@pytest.mark.parametrize("model", list(MLP_SHAPES))
def test_mlp_step(benchmark, model, impl):
    fn = _bench.model_step(MLP_SHAPES[model], impl)
    if fn is None:
        pytest.skip(f"{impl} not installed")
    fn()
    benchmark.group = f"{model} step"
    benchmark.extra_info.update(suite="model-step", rule=model, n=256, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ["fastgd", "torch", "sklearn"])
def test_logistic_epoch(benchmark, impl):
    fn = _bench.logistic_epoch(impl)
    if fn is None:
        pytest.skip(f"{impl} not installed")
    fn()
    benchmark.group = "logistic epoch"
    benchmark.extra_info.update(suite="logistic", rule="logistic", n=200_000, impl=impl)
    benchmark.pedantic(fn, rounds=3, iterations=1)
