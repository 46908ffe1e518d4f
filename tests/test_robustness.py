"""Property-based robustness: any input either works or raises a documented error, and a
failed call changes nothing. Plus long-run stability against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgd
import fastgd.functional as F
from fastgd import schedules as S
from tests.conftest import RULES
from tests.helpers import assert_unchanged, snapshot

DOCUMENTED = (TypeError, ValueError, fastgd.NonFiniteGradientError)
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int32])
specials = st.sampled_from([0.0, 1.0, -1.0, 1e-30, 1e30, math.nan, math.inf, -math.inf])
hyper = st.one_of(st.floats(-2, 2), st.sampled_from([math.nan, math.inf, -1.0, 0.0]),
                  st.just("0.1"), st.none())


@st.composite
def arrays(draw, shape, dtype):
    a = np.asarray(np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal(shape))
    a = a.astype(dtype)
    if a.size and dtype in (np.float32, np.float64):
        for _ in range(draw(st.integers(0, 3))):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(specials)
    return a


@st.composite
def problems(draw):
    name = draw(st.sampled_from(sorted(RULES)))
    cls, _, options = RULES[name]
    hp = dict(draw(st.sampled_from(options)))
    overridden = draw(st.booleans())
    if overridden:
        key = draw(st.sampled_from(sorted({"lr", "eps", "weight_decay", "momentum", "rho",
                                           "alpha", "lr_decay"})))
        hp[key] = draw(hyper)
    n = draw(st.integers(1, 4))
    shp = [draw(shapes) for _ in range(n)]
    dts = [draw(dtypes) for _ in range(n)]
    params = [np.asarray(np.random.default_rng(i).standard_normal(s)).astype(d)
              for i, (s, d) in enumerate(zip(shp, dts))]
    grads = []
    for s, d in zip(shp, dts):
        kind = draw(st.sampled_from(["same", "same", "same", "none", "shape", "dtype"]))
        if kind == "none":
            grads.append(None)
        elif kind == "shape":
            grads.append(draw(arrays((*s, 2), d)))
        elif kind == "dtype":
            grads.append(draw(arrays(s, np.float64 if d == np.float32 else np.float32)))
        else:
            grads.append(draw(arrays(s, d)))
    if draw(st.integers(0, 9)) == 0:
        grads = grads[:-1]
    step_kw = {}
    if draw(st.booleans()):
        step_kw["clip_norm"] = draw(st.sampled_from([1.0, 0.0, -1.0, math.nan, 1e-3]))
    if draw(st.integers(0, 4)) == 0:
        step_kw["grad_scale"] = draw(st.sampled_from([0.5, -2.0, math.inf, 0.0]))
    policy = draw(st.sampled_from(["propagate", "skip", "raise"]))
    flat = draw(st.booleans())
    return cls, hp, params, grads, step_kw, policy, flat, overridden


@SETTINGS
@given(problems())
def test_optimizers_never_crash_and_failed_calls_change_nothing(problem):
    cls, hp, params, grads, step_kw, policy, use_flat, overridden = problem
    if use_flat and all(p.dtype in (np.float32, np.float64) for p in params):
        flat = fastgd.FlatParams(params)
        params = list(flat.params)
    before = snapshot(params)
    try:
        opt = cls(params, nonfinite=policy, **hp)
    except DOCUMENTED:
        assert_unchanged(before, params)
        return
    for _ in range(2):
        before = snapshot(params, opt)
        try:
            applied = opt.step(grads, **step_kw)
        except DOCUMENTED:
            assert_unchanged(before, params, opt)
            return
        if not applied:
            assert policy == "skip"
            assert_unchanged(before, params, opt)
        if policy != "propagate" and applied:
            # "skip" and "raise" never apply a step whose gradients are not finite
            assert all(np.isfinite(g).all() for g in grads if g is not None)
            # and with a tested configuration, a finite scale and no zero clip threshold,
            # finite parameters stay finite (a drawn hyperparameter may make the update
            # itself non-finite, as torch's: RMSprop's alpha=2 gives a negative second
            # moment, Adadelta's eps=0 with clip_norm=0 a 0/0)
            sane = (not overridden and math.isfinite(step_kw.get("grad_scale", 1.0))
                    and step_kw.get("clip_norm", 1.0) > 0)
            if sane and all(np.isfinite(b).all() for b in before[0]):
                assert all(np.isfinite(p).all() for p in params if p.size)


FUNCTIONS = [
    ("sgd_", 1, {"lr": 0.1, "momentum": 0.9, "step": 1}),
    ("adagrad_", 1, {"step": 2}),
    ("adadelta_", 2, {}),
    ("rmsprop_", 1, {}),
    ("adam_", 2, {"step": 3}),
    ("adamw_", 3, {"step": 1}),
    ("adamax_", 2, {"step": 1}),
    ("nadam_", 2, {"step": 1, "mu_product": 1.0}),
    ("radam_", 2, {"step": 7}),
    ("lion_", 1, {}),
]


@SETTINGS
@given(st.sampled_from(FUNCTIONS), shapes, shapes, dtypes, dtypes, hyper, st.booleans())
def test_functional_never_crashes(fn, pshape, gshape, pdt, gdt, value, bad_key):
    name, n_state, kw = fn
    kw = dict(kw)
    if bad_key:
        kw["lr"] = value
    p = np.asarray(np.random.default_rng(0).standard_normal(pshape)).astype(pdt)
    g = np.asarray(np.random.default_rng(1).standard_normal(gshape)).astype(gdt)
    state = [np.zeros(pshape, pdt) for _ in range(n_state)]
    before = snapshot([p, *state])
    try:
        getattr(F, name)(p, g, *state, **kw)
    except DOCUMENTED:
        assert_unchanged(before, [p, *state])


@SETTINGS
@given(st.sampled_from(["cosine", "step_decay", "one_cycle", "polynomial", "multi_step",
                        "cosine_warm_restarts", "exponential_decay"]),
       st.lists(st.one_of(st.integers(-3, 50), st.floats(-2, 2), st.none()), max_size=4),
       st.integers(0, 200))
def test_schedule_builders_never_crash(name, args, t):
    try:
        sched = getattr(S, name)(*args)
    except DOCUMENTED:
        return
    v = sched(t)
    assert math.isfinite(v) and v >= 0


@SETTINGS
@given(st.lists(st.tuples(shapes, dtypes), min_size=1, max_size=3),
       st.one_of(st.floats(-1, 5), st.sampled_from([math.nan, math.inf])),
       st.sampled_from([2.0, 1.0, math.inf, 0.5, -1.0, "inf"]), st.booleans())
def test_clip_never_crashes(specs, max_norm, norm_type, error):
    grads = [np.asarray(np.random.default_rng(i).standard_normal(s)).astype(d)
             for i, (s, d) in enumerate(specs)]
    before = snapshot(grads)
    try:
        fastgd.clip_grad_norm_(grads, max_norm, norm_type, error_if_nonfinite=error)
    except DOCUMENTED:
        assert_unchanged(before, grads)


# -- long-run stability ------------------------------------------------------------------

STABILITY_STEPS = 100_000


@pytest.mark.slow
@pytest.mark.parametrize("magnitude", [1e-30, 1e30])
@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Adagrad"])
def test_long_run_nan_only_where_torch_has_nan(name, magnitude):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p = rng.standard_normal(16).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], size=(64, 16)).astype(np.float32)
    scales = np.float32(magnitude) * rng.uniform(0.5, 2.0, size=(64, 16)).astype(np.float32)
    grads = signs * scales
    tp = torch.tensor(p.copy())
    opt = getattr(fastgd, name)([p], lr=1e-3)
    topt = getattr(torch.optim, name)([tp], lr=1e-3)
    for t in range(STABILITY_STEPS):
        g = grads[t % 64]
        opt.step([g])
        tp.grad = torch.from_numpy(g)
        topt.step()
    torch_nan = bool(torch.isnan(tp).any())
    assert np.isnan(p).any() == torch_nan
    if not torch_nan:
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p, tp.numpy(), rtol=1e-3, atol=1e-3)


# -- malformed state dicts, checkpoints and flat specs -------------------------------------

def _stepped_adam():
    params = [np.ones((3, 2)), np.full(4, 2.0)]
    opt = fastgd.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.1}],
                      lr=0.01, nonfinite="skip")
    opt.step([np.ones((3, 2)), np.ones(4)])
    return params, opt


junk = st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3),
                 st.lists(st.integers(0, 3), max_size=3), st.just(np.zeros(2)),
                 st.just(np.zeros((3, 2), np.int64)), st.just({}))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["state", "group", "steps", "top"]),
                          st.integers(0, 5), junk), min_size=1, max_size=3))
def test_mutated_state_dicts_load_fully_or_not_at_all(mutations):
    params, opt = _stepped_adam()
    sd = opt.state_dict()
    # nested edits first, then the top-level replacements (which may remove the nesting)
    for where, k, value in sorted(mutations, key=lambda m: m[0] == "top"):
        if where == "state":
            entry = sd["state"][k % 2]
            key = sorted(entry)[k % len(entry)]
            entry[key] = value
        elif where == "group":
            group = sd["param_groups"][k % 2]
            key = sorted(group)[k % len(group)]
            group[key] = value
        elif where == "steps":
            sd["steps"] = value if k % 2 else {"applied": value, "skipped": 0}
        else:
            sd[["state", "param_groups", "steps", "extra"][k % 4]] = value
    before = snapshot(params, opt)
    try:
        opt.load_state_dict(sd)
    except DOCUMENTED:
        assert_unchanged(before, params, opt)


@SETTINGS
@given(st.binary(max_size=600), st.integers(0, 10_000))
def test_random_bytes_are_not_a_checkpoint(tmp_path_factory, data, cut):
    params, opt = _stepped_adam()
    path = tmp_path_factory.mktemp("ck") / "x.npz"
    fastgd.save(path, params=params, optimizer=opt)
    good = path.read_bytes()
    path.write_bytes(good[: cut % len(good)] + data if cut % 3 else data)
    before = snapshot(params, opt)
    with pytest.raises(fastgd.CheckpointError):
        fastgd.load(path, params=params, optimizer=opt)
    assert_unchanged(before, params, opt)


@SETTINGS
@given(st.lists(st.one_of(shapes, st.integers(-2, 5), st.text(max_size=2),
                          st.lists(st.floats(0, 3), max_size=2)), max_size=4), dtypes)
def test_flat_params_specs_never_crash(specs, dtype):
    try:
        flat = fastgd.FlatParams(specs, dtype=dtype)
    except DOCUMENTED:
        return
    assert len(flat.params) == len(specs) == len(flat.grads)
    assert sum(p.size for p in flat.params) == flat.size
