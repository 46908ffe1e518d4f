"""SparseAdam on an embedding table: fastgd vs torch.optim.SparseAdam.

A 1e6 x 64 float32 table (256 MB), 4096 touched rows per step (with repeats, coalesced in
the step). ``fastgd bench`` prints the same row.
"""

from __future__ import annotations

import pytest

from fastgd import _bench


@pytest.mark.parametrize("impl", ["fastgd", "torch"])
def test_sparse_adam_table(benchmark, impl):
    fn = _bench.sparse_table(impl)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = "SparseAdam 1e6 x 64, 4096 rows"
    benchmark.extra_info.update(suite="sparse", rule="SparseAdam", n=4096 * 64, impl=impl)
    benchmark(fn)
