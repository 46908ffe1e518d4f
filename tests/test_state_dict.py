"""state_dict round trips, bit-for-bit resume, and loads that must fail without changes."""

from __future__ import annotations

import io

import numpy as np
import pytest

import fastgd
from tests.conftest import CASES, DTYPES, RULES
from tests.helpers import assert_state_equal, assert_unchanged, snapshot

SHAPES = [(4, 3), (0,), (), (7,)]


def _grads(rng, dtype, t):
    gs = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    if t == 2:
        gs[3] = None
    return gs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_resume_is_bit_for_bit(name, case, dtype):
    cls, _, options = RULES[name]
    hp = options[case]
    rng = np.random.default_rng(7)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [_grads(rng, dtype, t) for t in range(10)]

    straight = [a.copy() for a in init]
    opt = cls(straight, **hp)
    for g in grads:
        opt.step(g)

    first = [a.copy() for a in init]
    opt1 = cls(first, **hp)
    for g in grads[:4]:
        opt1.step(g)
    sd = opt1.state_dict()
    # a fresh optimizer over other arrays of the same shapes, e.g. after a restart
    resumed = [a.copy() for a in first]
    opt2 = cls(resumed, lr=123.0)
    opt2.load_state_dict(sd)
    for g in grads[4:]:
        opt2.step(g)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    assert_state_equal(opt.state_dict(), opt2.state_dict())


def test_state_dict_is_plain_data_and_npz_safe():
    p = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    opt = fastgd.NAdam(p, lr=0.1)
    opt.step([np.ones(3, np.float32), np.ones((2, 2), np.float32)])
    sd = opt.state_dict()
    flat = {}
    for i, entry in sd["state"].items():
        for k, v in entry.items():
            assert isinstance(v, (float, np.ndarray)), (k, type(v))
            flat[f"{i}/{k}"] = v
    buf = io.BytesIO()
    np.savez(buf, **flat)
    buf.seek(0)
    loaded = dict(np.load(buf, allow_pickle=False))
    np.testing.assert_array_equal(loaded["0/exp_avg"], sd["state"][0]["exp_avg"])
    # the state dict holds copies: stepping again does not change it
    saved = sd["state"][0]["exp_avg"].copy()
    opt.step([np.ones(3, np.float32), np.ones((2, 2), np.float32)])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)


def test_load_casts_state_to_param_dtype():
    p64 = [np.ones(3)]
    opt64 = fastgd.Adam(p64, lr=0.1)
    opt64.step([np.full(3, 0.5)])
    p32 = [np.ones(3, np.float32)]
    opt32 = fastgd.Adam(p32, lr=0.1)
    opt32.load_state_dict(opt64.state_dict())
    assert opt32.state[0]["exp_avg"].dtype == np.float32
    np.testing.assert_allclose(opt32.state[0]["exp_avg"], 0.05, rtol=1e-7)


def _stepped():
    params = [np.ones((2, 2)), np.full(3, 2.0)]
    opt = fastgd.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    opt.step([np.ones((2, 2)), np.ones(3)])
    return params, opt


def _sd():
    return _stepped()[1].state_dict()


def _edit(fn):
    def make():
        sd = _sd()
        fn(sd)
        return sd
    return make


LOAD_ERRORS = [
    (lambda: [], ValueError, "must be a dict with keys"),
    (lambda: {"state": {}}, ValueError, "must be a dict with keys"),
    (_edit(lambda sd: sd["param_groups"].pop()), ValueError, "has 1 param groups"),
    (_edit(lambda sd: sd["param_groups"][1]["params"].append(7)), ValueError,
     "param group 1 has 1 parameters, the state dict's has 2"),
    (_edit(lambda sd: sd["param_groups"][0].pop("betas")), ValueError, "lacks \\['betas'\\]"),
    (_edit(lambda sd: sd["param_groups"][1].update(lr=-1.0)), ValueError,
     "Invalid learning rate"),
    (_edit(lambda sd: sd["state"][1].pop("exp_avg_sq")), ValueError, "expects"),
    (_edit(lambda sd: sd["state"][1].update(exp_avg=np.zeros(4))), ValueError,
     r"has shape \(4,\), params\[1\] has shape \(3,\)"),
    (_edit(lambda sd: sd["state"][1].update(exp_avg=np.zeros(3, np.int64))), TypeError,
     "must be a float array"),
    (_edit(lambda sd: sd["state"][0].update(step=0.0)), ValueError, "must be an integer >= 1"),
    (_edit(lambda sd: sd["state"][0].update(step=float("nan"))), ValueError, "nan"),
    (_edit(lambda sd: sd["state"].update({5: sd["state"][0]})), ValueError,
     "unknown parameter id 5"),
    (_edit(lambda sd: sd["param_groups"][1].update(amsgrad=True)), ValueError,
     "max_exp_avg_sq"),
]


@pytest.mark.parametrize(("make", "exc", "match"), LOAD_ERRORS)
def test_bad_state_dict_raises_and_changes_nothing(make, exc, match):
    params, opt = _stepped()
    sd = make()
    before = snapshot(params, opt)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd)
    assert_unchanged(before, params, opt)


def test_state_dict_of_another_optimizer_is_refused():
    params, opt = _stepped()
    other = fastgd.SGD([np.ones((2, 2)), np.ones(3)], lr=0.1, momentum=0.9)
    other.step([np.ones((2, 2)), np.ones(3)])
    sd = other.state_dict()
    sd["param_groups"] = [{**sd["param_groups"][0], "params": [0]},
                          {**sd["param_groups"][0], "params": [1]}]
    before = snapshot(params, opt)
    with pytest.raises(ValueError, match="not saved by Adam"):
        opt.load_state_dict(sd)
    assert_unchanged(before, params, opt)


def test_load_restores_hyperparameters_and_unstepped_params():
    _, opt = _stepped()
    sd = opt.state_dict()
    fresh = [np.ones((2, 2)), np.full(3, 2.0)]
    opt2 = fastgd.Adam([{"params": fresh[:1]}, {"params": fresh[1:]}], lr=0.5)
    opt2.step([None, np.ones(3)])
    sd_partial = opt2.state_dict()
    assert list(sd_partial["state"]) == [1]
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.1
    assert_state_equal(opt2.state_dict(), sd)
    # and back: param 0 loses its state again
    opt2.load_state_dict(sd_partial)
    assert list(opt2.state_dict()["state"]) == [1]


def test_state_dict_saved_before_eps_root_and_eps_mode_loads_as_torch_form():
    rng = np.random.default_rng(3)
    init = rng.standard_normal(5)
    a, b = init.copy(), init.copy()
    old = fastgd.Adam([a], lr=0.1)
    old.step([np.ones(5)])
    sd = old.state_dict()
    for group in sd["param_groups"]:  # as an earlier fastgd saved it
        del group["eps_root"], group["eps_mode"]
    new = fastgd.Adam([b], lr=0.1, eps_root=0.5, eps_mode="hat")
    b[...] = a
    new.load_state_dict(sd)
    assert new.param_groups[0]["eps_root"] == 0.0
    assert new.param_groups[0]["eps_mode"] == "torch"
    old.step([np.ones(5)])
    new.step([np.ones(5)])
    np.testing.assert_array_equal(a, b)
    del sd["param_groups"][0]["eps"]
    before = snapshot([b], new)
    with pytest.raises(ValueError, match=r"lacks \['eps'\]"):
        new.load_state_dict(sd)
    assert_unchanged(before, [b], new)
