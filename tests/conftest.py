"""The rule table of the parity, error and torch tests, read from fastgd's registry."""

from __future__ import annotations

import numpy as np
import pytest

from fastgd.optim.registry import RULES as REGISTRY
from tests import reference as R

# name -> (class, reference rule, option sets), from the registry: every option set is
# exercised with float32 and float64 and against torch when torch is installed.
RULES = {name: (rule.cls, getattr(R, rule.reference), list(rule.options))
         for name, rule in REGISTRY.items() if rule.generic}


def torch_kwargs(name, hp):
    """``hp`` for the torch.optim twin of rule ``name``, or None when torch lacks an option."""
    import inspect

    import torch

    rule = REGISTRY[name]
    if rule.torch is None:
        return None
    accepted = inspect.signature(getattr(torch.optim, rule.torch)).parameters
    return dict(hp) if all(k in accepted for k in hp) else None


CASES = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name, (_, _, opts) in RULES.items()
    for i in range(len(opts))
]

DTYPES = [np.float32, np.float64]

# Relative tolerances of kernel vs reference after 12 steps (issue 2: float64 1e-12,
# float32 1e-5).
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def tol(dtype):
    """rtol/atol for comparing arrays of ``dtype`` (atol scaled for values near zero)."""
    r = RTOL[np.dtype(dtype).type]
    return {"rtol": r, "atol": r}


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
