"""SparseAdam and SparseGrad: torch's update on the touched rows only, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
import fastgd.functional as F
from fastgd.optim.registry import RULES
from tests.conftest import DTYPES, tol
from tests.helpers import assert_unchanged, snapshot
from tests.reference import ReferenceOptimizer, ref_sparse_adam

OPTIONS = list(RULES["SparseAdam"].options)
SHAPES = [(40,), (30, 3), (20, 2, 2)]


def _grad(rng, shape, dtype, k=12, repeats=True):
    idx = rng.integers(0, shape[0], k) if repeats else rng.permutation(shape[0])[:k]
    return fastgd.SparseGrad(idx, rng.standard_normal((k, *shape[1:])).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", OPTIONS)
def test_matches_the_reference_on_lists_groups_and_flat_buffers(hp, dtype):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    for layout in ("list", "groups", "flat"):
        if layout == "flat":
            flat = fastgd.FlatParams([a.copy() for a in init])
            params = list(flat.params)
            opt = fastgd.SparseAdam(flat, **hp)
        else:
            params = [a.copy() for a in init]
            groups = ([{"params": params[:1]}, {"params": params[1:], "lr": 0.02}]
                      if layout == "groups" else params)
            opt = fastgd.SparseAdam(groups, **hp)
        refs = [a.copy() for a in init]
        lrs = [hp["lr"]] + [0.02 if layout == "groups" else hp["lr"]] * 2
        ref = [ReferenceOptimizer(ref_sparse_adam, [r], **{**hp, "lr": lr})
               for r, lr in zip(refs, lrs)]
        for t in range(8):
            grads = [_grad(rng, s, dtype, k=(0 if t == 3 else 12)) for s in SHAPES]
            if t == 5:
                grads[1] = None
            opt.step(grads)
            for r, g in zip(ref, grads):
                r.step([g])
            for i, (p, r) in enumerate(zip(params, refs)):
                np.testing.assert_allclose(p, r, **tol(dtype), err_msg=f"{layout} {i} {t}")
        assert opt.state[0]["step"] == 8 and opt.state[1]["step"] == 7


def test_only_the_touched_rows_are_read_and_written():
    table = np.random.default_rng(0).standard_normal((1000, 8))
    before = table.copy()
    opt = fastgd.SparseAdam([table], lr=0.1)
    rows = np.array([5, 900, 5, 17])
    opt.step([fastgd.SparseGrad(rows, np.ones((4, 8)))])
    touched = np.zeros(1000, bool)
    touched[rows] = True
    np.testing.assert_array_equal(table[~touched], before[~touched])
    assert not np.any(table[touched] == before[touched])
    assert not opt.state[0]["exp_avg"][~touched].any()
    # repeated rows are summed first: row 5's gradient was 2
    np.testing.assert_allclose(opt.state[0]["exp_avg"][5], 0.1 * 2.0)


def test_a_step_allocates_nothing_the_size_of_the_table():
    import tracemalloc

    table = np.zeros((200_000, 16), np.float32)  # 12.8 MB
    opt = fastgd.SparseAdam([table], lr=0.01)
    rng = np.random.default_rng(0)
    g = _grad(rng, table.shape, np.float32, k=256)
    opt.step([g])  # state allocated and kernels compiled
    g = _grad(rng, table.shape, np.float32, k=256)
    tracemalloc.start()
    try:
        opt.step([g])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < table.nbytes / 50, peak


def test_functional_equals_the_class():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((25, 4))
    b = a.copy()
    opt = fastgd.SparseAdam([a], lr=0.03, betas=(0.8, 0.95), maximize=True)
    m, v = np.zeros_like(b), np.zeros_like(b)
    for t in range(1, 6):
        g = _grad(rng, a.shape, np.float64)
        opt.step([g])
        F.sparse_adam_(b, g, m, v, step=t, lr=0.03, beta1=0.8, beta2=0.95, maximize=True)
        np.testing.assert_array_equal(a, b)


def test_matches_torch_sparse_adam():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rng = np.random.default_rng(1)
        init = rng.standard_normal((30, 5))
        ours = init.copy()
        theirs = torch.tensor(init.copy())
        opt = fastgd.SparseAdam([ours], lr=0.05, betas=(0.85, 0.99), eps=1e-6)
        topt = torch.optim.SparseAdam([theirs], lr=0.05, betas=(0.85, 0.99), eps=1e-6)
        for _ in range(10):
            g = _grad(rng, init.shape, np.float64)
            opt.step([g])
            theirs.grad = torch.sparse_coo_tensor(torch.tensor(g.indices)[None],
                                                  torch.tensor(g.values), init.shape,
                                                  check_invariants=True)
            topt.step()
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(opt.state[0]["exp_avg_sq"],
                                   topt.state[theirs]["exp_avg_sq"].numpy(), rtol=1e-12)
    finally:
        torch.set_default_dtype(old)


def test_state_dict_resume_and_checkpoint(tmp_path):
    rng = np.random.default_rng(2)
    init = rng.standard_normal((20, 3)).astype(np.float32)
    grads = [_grad(rng, init.shape, np.float32) for _ in range(6)]
    a = init.copy()
    opt = fastgd.SparseAdam([a], lr=0.05)
    for g in grads:
        opt.step([g])
    b = init.copy()
    opt1 = fastgd.SparseAdam([b], lr=0.05)
    for g in grads[:3]:
        opt1.step([g])
    fastgd.save(tmp_path / "s.npz", params=[b], optimizer=opt1)
    c = np.zeros_like(init)
    opt2 = fastgd.SparseAdam([c], lr=0.05)
    fastgd.load(tmp_path / "s.npz", params=[c], optimizer=opt2)
    for g in grads[3:]:
        opt2.step([g])
    np.testing.assert_array_equal(a, c)


def test_nonfinite_policy_and_clipping_use_the_rows():
    table = np.ones((10, 2))
    opt = fastgd.SparseAdam([table], lr=0.1, nonfinite="skip")
    bad = fastgd.SparseGrad(np.array([1]), np.array([[np.nan, 1.0]]))
    assert opt.step([bad]) is False
    np.testing.assert_array_equal(table, 1.0)
    good = fastgd.SparseGrad(np.array([1, 1]), np.array([[3.0, 0.0], [0.0, 4.0]]))
    assert opt.step([good], clip_norm=1.0)
    assert opt.last_grad_norm == pytest.approx(5.0)  # of the summed row (3, 4)


def _table():
    return [np.zeros((10, 2)), np.zeros(5)]


@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda p: [np.ones((10, 2)), None], TypeError,
     r"grads\[0\] is a NumPy array: SparseAdam does not support dense gradients"),
    (lambda p: [fastgd.SparseGrad(np.array([10]), np.ones((1, 2))), None], ValueError,
     r"grads\[0\]\.indices must be in \[0, 10\), got range \[10, 10\]"),
    (lambda p: [fastgd.SparseGrad(np.array([-1]), np.ones((1, 2))), None], ValueError,
     r"must be in \[0, 10\)"),
    (lambda p: [fastgd.SparseGrad(np.array([1]), np.ones((1, 3))), None], ValueError,
     r"rows of shape \(3,\), the parameter's rows have shape \(2,\)"),
    (lambda p: [fastgd.SparseGrad(np.array([1]), np.ones((1, 2), np.float32)), None],
     TypeError, "has dtype float32, the parameter has dtype float64"),
    (lambda p: [None, np.ones(5)], TypeError, "does not support dense gradients"),
])
def test_bad_gradients_are_refused_and_change_nothing(make, exc, match):
    params = _table()
    opt = fastgd.SparseAdam(params, lr=0.1)
    opt.step([fastgd.SparseGrad(np.array([0]), np.ones((1, 2))), None])
    before = snapshot(params, opt)
    with pytest.raises(exc, match=match):
        opt.step(make(params))
    assert_unchanged(before, params, opt)


def test_construction_and_other_optimizers_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match=r"Invalid learning rate: 0\.0 \(lr must be > 0\)"):
        fastgd.SparseAdam(_table(), lr=0.0)
    with pytest.raises(ValueError, match=r"params\[0\] is 0-d"):
        fastgd.SparseAdam([np.zeros(())])
    with pytest.raises(TypeError, match="needs sparse gradients"):
        fastgd.SparseAdam(fastgd.FlatParams([(3, 2)])).step()
    p = [np.zeros((4, 2))]
    opt = fastgd.Adam(p, lr=0.1)
    before = snapshot(p, opt)
    with pytest.raises(TypeError, match="Adam does not support sparse gradients, please "
                                        "consider SparseAdam instead"):
        opt.step([fastgd.SparseGrad(np.array([0]), np.ones((1, 2)))])
    assert_unchanged(before, p, opt)
    with pytest.raises(ValueError, match="one row per index"):
        fastgd.SparseGrad(np.array([0, 1]), np.ones((3, 2)))
    with pytest.raises(ValueError, match="1-D integer array"):
        fastgd.SparseGrad(np.array([0.5]), np.ones((1, 2)))


def test_coalesce_sums_repeats_and_keeps_unique_sorted_input_as_is():
    g = fastgd.SparseGrad(np.array([4, 1, 4, 4]), np.arange(8.0).reshape(4, 2))
    c = g.coalesce()
    assert c.indices.tolist() == [1, 4]
    np.testing.assert_array_equal(c.values, [[2.0, 3.0], [0 + 4 + 6, 1 + 5 + 7]])
    u = fastgd.SparseGrad(np.array([0, 3]), np.ones((2, 2)))
    assert u.coalesce() is u
    np.testing.assert_array_equal(g.to_dense((5, 2))[4], [10.0, 13.0])
    big = fastgd.SparseGrad(np.random.default_rng(0).integers(0, 100, 100_000),
                            np.ones((100_000, 3)))
    dense = big.to_dense((100, 3))  # the parallel coalescing kernel
    np.testing.assert_array_equal(dense[:, 0], np.bincount(big.indices, minlength=100))
