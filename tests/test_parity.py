"""Every rule x option set x dtype x layout against the naive NumPy reference."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

import fastgd
from fastgd import _backend
from tests.conftest import CASES, DTYPES, REGISTRY, RULES, tol
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


def _threshold(name):
    """The largest parallel threshold of the kernels of rule ``name``'s module."""
    from fastgd.kernels.cpu._jit import NEVER_PARALLEL, KernelRule

    module = importlib.import_module(f"fastgd.kernels.cpu.{REGISTRY[name].kernel}")
    return max(k.threshold for k in vars(module).values()
               if isinstance(k, KernelRule) and k.threshold < NEVER_PARALLEL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_parallel_kernel_matches_reference(name, case, dtype, rng):
    """Arrays above the threshold take the prange kernels (numba-pitfalls.md, item 1)."""
    cls, rule, options = RULES[name]
    hp = options[case]
    n = _threshold(name) + 1001
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
    module = REGISTRY[name].kernel
    return {
        str(sig[-1].dtype)
        for key, entry in _backend._kernel_cache.items()
        if key[0] == module and entry.builds[True] is not None
        for sig in entry.builds[True].signatures
    }


def _functional_call(name, hp, p, g, state, t, scalars):
    """One call of rule ``name``'s functional function with the class's hyperparameters.

    The mapping is generic: ``betas`` become ``beta1`` / ``beta2``, state arrays go by
    name (``sum`` as ``state_sum``), ``step`` where the function takes it, the scalar
    state (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) as the previous call
    returned it (defaults on the first call), and options that only choose a variant
    (amsgrad, centered) are the state passed. Returns the new scalar state.
    """
    fn = REGISTRY[name].functional
    params = inspect.signature(fn).parameters
    kw = {}
    for k, v in hp.items():
        if k == "betas":
            kw["beta1"], kw["beta2"] = v
        elif k in params:
            kw[k] = v
    for n, a in state.items():
        kw[n if n in params else next(q for q in params if q.endswith("_" + n))] = a
    if "step" in params:
        kw["step"] = t
    kw.update(scalars)
    out = fn(p, g, **kw)
    names = [k for k in REGISTRY[name].cls._scalar_init if k != "step"]
    return dict(zip(names, [out] if len(names) == 1 else (out or ())))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_functional_matches_class(name, case, dtype, rng):
    """The functional rule with caller-held state equals the class over 8 steps."""
    cls, _, options = RULES[name]
    hp = dict(options[case])
    p = rng.standard_normal((3, 4)).astype(dtype)
    q = p.copy()
    opt = cls([q], **hp)
    state, scalars = {}, {}
    for t in range(1, 9):
        g = rng.standard_normal((3, 4)).astype(dtype)
        opt.step([g])
        checked = opt._hyper(0)
        for n in opt._state_names(checked):
            shape = opt._state_shape(n, p.shape)  # None: this parameter has no such state
            if shape is not None:
                state.setdefault(n, np.full(shape, opt._state_init(checked, n), p.dtype))
        scalars = _functional_call(name, hp, p, g, state, t, scalars)
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("size", [37, "parallel"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_eps_hat_is_computed_in_keras_order(dtype, size, amsgrad, rng):
    """``eps_mode="hat"`` steps as Keras / scikit-learn write it, bit for bit:
    ``p - (lr sqrt(1-b2^t)/(1-b1^t)) * (m / (sqrt(v + eps_root (1-b2^t)) + eps))``."""
    n = _threshold("Adam") + 1001 if size == "parallel" else size
    lr, (b1, b2), eps, eps_root = 3e-3, (0.8, 0.95), 1e-3, 1e-4
    p = rng.standard_normal(n).astype(dtype)
    opt = fastgd.Adam([p], lr=lr, betas=(b1, b2), eps=eps, eps_root=eps_root,
                      amsgrad=amsgrad, eps_mode="hat")
    one = np.dtype(dtype).type
    r, m, v, vmax = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 6):
        g = rng.standard_normal(n).astype(dtype)
        opt.step([g])
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        m = m + one(1 - b1) * (g - m)
        v = one(b2) * v + one(1 - b2) * (g * g)
        vmax = np.maximum(vmax, v)
        denom = np.sqrt((vmax if amsgrad else v) + one(eps_root * bc2)) + one(eps)
        r = r - one(lr * bc2**0.5 / bc1) * (m / denom)
        np.testing.assert_array_equal(p, r, err_msg=f"step {t}")
