"""Snapshots for "a failed call changed nothing" checks."""

from __future__ import annotations

import numpy as np


def snapshot(params, opt=None):
    """Copies of params and of the optimizer's whole state."""
    state = opt.state_dict() if opt is not None else None
    return [p.copy() for p in params], state


def assert_unchanged(before, params, opt=None):
    ps, state = before
    for a, b in zip(ps, params):
        np.testing.assert_array_equal(a, b)
    if opt is not None:
        assert_state_equal(state, opt.state_dict())


def assert_state_equal(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a.get("average") == b.get("average")
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for k, v in a["state"][i].items():
            np.testing.assert_array_equal(v, b["state"][i][k])


def linear_case(output, k, n, d, dtype=np.float64, seed=0, xp=None):
    """A model without hidden layers, its data ``(X, y)`` and row weights.

    Parameters of both signs (logits of both signs, a spread softmax); ``y``: labels for
    ``"multiclass"``, 0 / 1 targets for ``"binary"`` (``(n,)``) and ``"multilabel"``.
    """
    from fastgd.models import MLP

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    if output == "multiclass":
        y = rng.integers(0, k, size=n)
    else:
        y = rng.integers(0, 2, size=(n, k)).astype(float)
        if output == "binary":
            y = y[:, 0]
    kw = {} if xp is None else {"xp": xp}
    model = MLP([d, k], output=output, seed=seed, l2=0.03, l1=0.01, dtype=dtype, **kw)
    for p in model.params:
        v = rng.normal(size=p.shape) * 0.5
        p[...] = v if xp is None else xp.asarray(v)
    return model, X, y, rng.uniform(0.0, 2.0, n)
