"""Clipping fused into the step vs clip-then-step (fastgd and torch).

Fused: one norm pass plus the update pass; separate: the norm, a scaling pass, then the
update.
"""

from __future__ import annotations

import pytest

from fastgd import _bench


@pytest.mark.parametrize("impl", ["fused", "separate", "torch"])
@pytest.mark.parametrize("n", [1_000_000, 10_000_000])
def test_adam_clip_norm(benchmark, n, impl):
    fn = _bench.clipped(n, impl)
    if fn is None:
        pytest.skip("torch not installed")
    fn()
    benchmark.group = f"clip n={n}"
    benchmark.extra_info.update(suite="clip", rule="Adam+clip", n=n, impl=impl)
    benchmark(fn)
