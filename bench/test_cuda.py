"""GPU benchmarks (skipped without CuPy and a GPU): every rule at 1e6, 1e7, 1e8 float32
against plain CuPy expressions, torch fused on the same GPU, and a device-to-device copy.

``fastgd bench --device cuda`` prints the same figures as one table.
"""

from __future__ import annotations

import pytest

from fastgd import _bench
from fastgd.optim.registry import generic
from tests.cuda_support import has_gpu

pytestmark = pytest.mark.skipif(not has_gpu(), reason="no CUDA GPU")


def _synced(fn):
    import cupy as cp

    sync = cp.cuda.Device().synchronize

    def run():
        fn()
        sync()

    return run


@pytest.mark.parametrize("n", _bench.CUDA_SIZES)
def test_cuda_copy(benchmark, n):
    fn = _synced(_bench.device_copy(n))
    fn()
    benchmark.extra_info.update(suite="cuda", rule="copy", n=n, impl="copy", bytes=8 * n)
    benchmark(fn)


@pytest.mark.parametrize("impl", ["fastgd", "numpy", "torch"])
@pytest.mark.parametrize("n", _bench.CUDA_SIZES)
@pytest.mark.parametrize("rule", generic())
def test_cuda_step(benchmark, rule, n, impl):
    import cupy as cp

    fn = _bench.single(rule, n, impl, xp=cp)
    if fn is None:
        pytest.skip(f"no {impl} peer for {rule}")
    fn = _synced(fn)
    fn()
    benchmark.group = f"cuda n={n}"
    benchmark.extra_info.update(suite="cuda", rule=rule, n=n, impl=impl,
                                bytes=_bench.bytes_per_step(rule, n))
    benchmark(fn)


@pytest.mark.parametrize("impl", ["fastgd", "torch"])
@pytest.mark.parametrize("rule", ["Adam", "SGD", "Adagrad"])
def test_cuda_model_300_tensors(benchmark, rule, impl):
    import cupy as cp

    fn = _bench.model(rule, impl, xp=cp)
    if fn is None:
        pytest.skip("torch with CUDA not installed")
    fn = _synced(fn)
    fn()
    benchmark.group = "cuda 300 tensors"
    benchmark.extra_info.update(suite="cuda-model", rule=rule, n=2_000_000, impl=impl)
    benchmark(fn)
