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
