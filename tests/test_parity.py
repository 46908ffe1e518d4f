"""Every rule x option set x dtype x layout against the naive NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd import _backend
from tests.conftest import CASES, DTYPES, RULES, tol
from tests.reference import ReferenceOptimizer

SCALARS = ("step", "mu_product")
STEPS = 12  # > 6, so RAdam crosses into its rectified branch

SHAPES = {
    "single": [(37,)],
    "list": [(0,), (5, 3), (), (0, 4), (17,), (0,)],
    "flat": [(0,), (5, 3), (), (17,), (2, 2, 2), (0,)],
    "groups": [(4, 3), (), (9,), (0,), (6,)],
}


def _compare_state(opt, refs, index_of, dtype):
    for i, (ref, k) in index_of.items():
        ours = opt.state.get(i, {})
        theirs = refs[ref].state[k]
        arrays = {n: v for n, v in theirs.items() if n not in SCALARS}
        assert {n for n in ours if n not in SCALARS} == set(arrays), i
        for n, v in arrays.items():
            np.testing.assert_allclose(ours[n], v, **tol(dtype), err_msg=f"state {n} of {i}")
        for n in SCALARS:
            if n in theirs:
                assert ours[n] == pytest.approx(theirs[n], rel=1e-15), (i, n)


@pytest.mark.parametrize("layout", list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_matches_reference(name, case, dtype, layout, rng):
    cls, rule, options = RULES[name]
    hp = options[case]
    shapes = SHAPES[layout]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if layout == "flat":
        flat = fastgd.FlatParams(init)
        params = list(flat.params)
        opt = cls(flat, **hp)
    else:
        params = [a.copy() for a in init]
    ref_params = [a.copy() for a in init]
    if layout == "groups":
        lr2 = hp.get("lr", 1.0) * 0.5
        opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": lr2}], **hp)
        refs = [ReferenceOptimizer(rule, ref_params[:2], **hp),
                ReferenceOptimizer(rule, ref_params[2:], **{**hp, "lr": lr2})]
        index_of = {i: (0, i) if i < 2 else (1, i - 2) for i in range(len(shapes))}
    else:
        if layout != "flat":
            opt = cls(params, **hp)
        refs = [ReferenceOptimizer(rule, ref_params, **hp)]
        index_of = {i: (0, i) for i in range(len(shapes))}
    for t in range(STEPS):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        if t in (3, 4) and len(shapes) > 2:
            grads[2] = None  # a parameter without gradient: untouched, its step not counted
        if layout == "flat" and t % 2 == 0:
            for gv, g in zip(flat.grads, grads):
                if g is not None:
                    gv[...] = g
            if any(g is None for g in grads):
                opt.step([None if g is None else gv for gv, g in zip(flat.grads, grads)])
            else:
                opt.step()
        else:
            opt.step(grads)
        if layout == "groups":
            refs[0].step(grads[:2])
            refs[1].step(grads[2:])
        else:
            refs[0].step(grads)
        for i, (p, r) in enumerate(zip(params, ref_params)):
            np.testing.assert_allclose(p, r, **tol(dtype), err_msg=f"param {i} step {t}")
        _compare_state(opt, refs, index_of, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_parallel_kernel_matches_reference(name, case, dtype, rng):
    """Arrays above the threshold take the prange kernels (numba-pitfalls.md, item 1)."""
    cls, rule, options = RULES[name]
    hp = options[case]
    module = {"AdamW": "adam"}.get(name, name.lower())
    kernel = {"SGD": "sgd_momentum" if hp.get("momentum") else "sgd"}.get(name, module)
    n = _backend.kernel_rule(module, kernel).threshold + 1001
    p = rng.standard_normal(n).astype(dtype)
    r = p.copy()
    opt, ref = cls([p], **hp), ReferenceOptimizer(rule, [r], **hp)
    for t in range(7):
        g = rng.standard_normal(n).astype(dtype)
        opt.step([g])
        ref.step([g])
        np.testing.assert_allclose(p, r, **tol(dtype), err_msg=f"step {t}")
    # the parallel build of this rule ran on this dtype
    assert np.dtype(dtype).name in _parallel_signatures(name)


def _parallel_signatures(name):
    module = {"AdamW": "adam"}.get(name, name.lower())
    return {
        str(sig[-1].dtype)
        for key, (_, _, parallel) in _backend._kernel_cache.items()
        if key[0] == module and parallel is not None
        for sig in parallel.signatures
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_functional_matches_class(name, case, dtype, rng):
    """The functional rule with caller-held state equals the class over 8 steps."""
    import fastgd.functional as F

    cls, _, options = RULES[name]
    hp = dict(options[case])
    p = rng.standard_normal((3, 4)).astype(dtype)
    q = p.copy()
    opt = cls([q], **hp)
    state = {}
    mu_product = 1.0
    for t in range(1, 9):
        g = rng.standard_normal((3, 4)).astype(dtype)
        opt.step([g])
        names = opt._state_names(opt._hyper(0))
        for n in names:
            state.setdefault(n, np.full_like(p, opt._state_init(opt._hyper(0), n)))
        skip = ("betas", "amsgrad", "centered", "initial_accumulator_value")
        kw = {k: v for k, v in hp.items() if k not in skip}
        if "betas" in hp or name in ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Lion"):
            b1, b2 = hp.get("betas", (0.9, 0.99) if name == "Lion" else (0.9, 0.999))
            kw.update(beta1=b1, beta2=b2)
        arrays = [state[n] for n in names]
        if name == "SGD":
            F.sgd_(p, g, *arrays, step=t if arrays else None, **kw)
        elif name == "NAdam":
            mu_product = F.nadam_(p, g, *arrays, step=t, mu_product=mu_product, **kw)
        elif name == "Lion":
            F.lion_(p, g, *arrays, **kw)
        elif name in ("Adadelta",):
            F.adadelta_(p, g, *arrays, **kw)
        elif name == "RMSprop":
            sq = arrays[0]
            ga = state.get("grad_avg")
            buf = state.get("momentum_buffer")
            F.rmsprop_(p, g, sq, ga, buf, **kw)
        else:
            fn = getattr(F, name.lower() + "_")
            fn(p, g, *arrays, step=t, **kw)
        np.testing.assert_array_equal(p, q)
