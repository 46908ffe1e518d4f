"""Muon: torch's algorithm (float64, against the reference) and torch itself (bfloat16)."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
import fastgd.functional as F
from fastgd.optim.registry import RULES
from tests.helpers import assert_unchanged, snapshot
from tests.reference import ReferenceOptimizer, ref_muon

OPTIONS = list(RULES["Muon"].options)
SHAPES = [(12, 5), (4, 9), (6, 6)]  # tall (transposed iteration), wide, square


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hp", OPTIONS)
def test_matches_torchs_algorithm_in_the_parameter_dtype(hp, dtype):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    for layout in ("list", "flat", "groups"):
        if layout == "flat":
            flat = fastgd.FlatParams([a.copy() for a in init])
            params, opt = list(flat.params), fastgd.Muon(flat, **hp)
        elif layout == "groups":
            params = [a.copy() for a in init]
            opt = fastgd.Muon([{"params": params[:1]}, {"params": params[1:]}], **hp)
        else:
            params = [a.copy() for a in init]
            opt = fastgd.Muon(params, **hp)
        refs = [a.copy() for a in init]
        ref = ReferenceOptimizer(ref_muon, refs, **hp)
        for t in range(6):
            grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
            if t == 2:
                grads[1] = None
            opt.step(grads)
            ref.step(grads)
            tol = 1e-11 if dtype == np.float64 else 2e-5
            for p, r in zip(params, refs):
                np.testing.assert_allclose(p, r, rtol=tol, atol=tol, err_msg=f"{layout} {t}")


def test_matches_torch_muon_to_bfloat16_precision():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    init = rng.standard_normal((16, 8)).astype(np.float32)
    ours, theirs = init.copy(), torch.tensor(init.copy())
    opt = fastgd.Muon([ours], lr=0.05)
    topt = torch.optim.Muon([theirs], lr=0.05)
    for _ in range(5):
        g = rng.standard_normal(init.shape).astype(np.float32)
        before = ours.copy()
        opt.step([g])
        theirs.grad = torch.tensor(g)
        topt.step()
        step_ours, step_torch = ours - before, theirs.numpy() - before
        # torch orthogonalizes in bfloat16 (8 bits of mantissa): the steps agree to ~1e-2
        scale = np.abs(step_torch).max()
        np.testing.assert_allclose(step_ours, step_torch, rtol=0, atol=0.03 * scale)
        ours[...] = theirs.numpy()  # keep comparing single steps from the same point
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"],
                               topt.state[theirs]["momentum_buffer"].numpy(), rtol=1e-5)


def test_the_update_is_nearly_orthogonal():
    rng = np.random.default_rng(2)
    w = np.zeros((32, 16))
    fastgd.Muon([w], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False,
                ns_steps=10).step([rng.standard_normal((32, 16))])
    s = np.linalg.svd(-w / np.sqrt(2.0), compute_uv=False)  # lr adjusted by sqrt(32/16)
    assert 0.5 < s.min() and s.max() < 1.5  # the quintic iteration's band, not exactly 1


def test_functional_equals_the_class():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((7, 3))
    b, buf = a.copy(), np.zeros_like(a)
    opt = fastgd.Muon([a], lr=0.03, weight_decay=0.01)
    for _ in range(4):
        g = rng.standard_normal(a.shape)
        opt.step([g])
        F.muon_(b, g, buf, lr=0.03, weight_decay=0.01)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"ns_steps": 100}, ValueError, "Number of steps must be less than 100"),
    ({"ns_coefficients": (1.0, 2.0)}, ValueError, "exactly 3 values"),
    ({"adjust_lr_fn": "sqrt"}, ValueError, "Adjust learning rate function sqrt"),
    ({"momentum": -0.1}, ValueError, "Invalid momentum value"),
    ({"lr": -1.0}, ValueError, "Invalid learning rate"),
])
def test_errors(kw, exc, match):
    w = [np.ones((3, 2))]
    before = snapshot(w)
    with pytest.raises(exc, match=match):
        fastgd.Muon(w, **kw)
    assert_unchanged(before, w)


def test_only_2d_parameters():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters .* \(3,\)"):
        fastgd.Muon([np.ones((2, 2)), np.ones(3)])
    opt = fastgd.Muon([np.ones((2, 2))])
    with pytest.raises(ValueError, match="2D"):
        opt.param_groups[0]["params"].append(np.ones((2, 2, 2)))
        opt.step([np.ones((2, 2)), np.ones((2, 2, 2))])
