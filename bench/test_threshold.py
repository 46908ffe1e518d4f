"""Serial vs parallel builds of three kernels across sizes: where the threshold belongs.

Rules with a square root or division per element (Adam stands for them) and light rules
(SGD with momentum, axpy) cross over at different sizes; kernels/cpu/_jit.py records the
measured values.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastgd import _backend

SIZES = [4096, 8192, 16384, 32768, 65536, 131072]
KERNELS = {
    "adam": ("adam", "adam", (("amsgrad", False),), 14),
    "sgd_momentum": ("sgd", "sgd_momentum", (("nesterov", False),), 8),
    "axpy": ("axpy", "axpy", (), 3),
}


def _args(kernel, n):
    rng = np.random.default_rng(0)
    a = [rng.standard_normal(n, dtype=np.float32) for _ in range(4)]
    a[3] = np.abs(a[3])
    if kernel == "adam":
        return (a[0], 1.0, 0.0, 1.0, 0.1, 0.999, 0.001, 0.5, 1e-8, 1e-3, a[1], a[2], a[3], a[1])
    if kernel == "sgd_momentum":
        return (a[0], 1.0, 0.0, 1e-4, 0.9, 1.0, a[1], a[2])
    return (a[0], 1e-7, a[1])


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_threshold(benchmark, kernel, n, parallel):
    module, name, flags, _ = KERNELS[kernel]
    k = _backend.kernel_rule(module, name).variant(parallel, flags)
    args = _args(kernel, n)
    k(*args)
    benchmark.group = f"threshold {kernel} n={n}"
    benchmark.extra_info.update(suite="threshold", rule=kernel, n=n,
                                impl="parallel" if parallel else "serial")
    benchmark(k, *args)
