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
