"""param_groups edited between steps behave as in torch; threads and fork are safe."""

from __future__ import annotations

import copy
import multiprocessing as mp
import pickle
import threading

import numpy as np
import pytest

import fastgd
from tests.helpers import assert_unchanged, snapshot
from tests.reference import ReferenceOptimizer, ref_adam, ref_sgd


def _grads(params, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape) for p in params]


def test_in_place_edit_of_a_list_value_is_seen():
    p, r = np.ones(4), np.ones(4)
    opt = fastgd.Adam([p], lr=0.1, betas=[0.9, 0.999])
    ref = ReferenceOptimizer(ref_adam, [r], lr=0.1, betas=(0.9, 0.999))
    g = _grads([p], 0)
    opt.step(g)
    ref.step(g)
    opt.param_groups[0]["betas"][1] = 0.5  # in place: the same list object
    ref.hp["betas"] = (0.9, 0.5)
    for t in range(3):
        g = _grads([p], t + 1)
        opt.step(g)
        ref.step(g)
    np.testing.assert_allclose(p, r, rtol=1e-14)


def test_in_place_edit_to_a_bad_value_is_refused_before_anything_changes():
    p = np.ones(4)
    opt = fastgd.Adam([p], lr=0.1, betas=[0.9, 0.999])
    opt.step(_grads([p], 0))
    opt.param_groups[0]["betas"][1] = 5.0
    before = snapshot([p], opt)
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 1: 5\.0"):
        opt.step(_grads([p], 1))
    assert_unchanged(before, [p], opt)


def test_array_valued_hyperparameters_replaced_by_others():
    p, r = np.ones(3), np.ones(3)
    opt = fastgd.Adam([p], lr=0.1, betas=np.array([0.9, 0.999]))
    ref = ReferenceOptimizer(ref_adam, [r], lr=0.1, betas=(0.9, 0.999))
    for t, betas in enumerate([(0.8, 0.99), (0.7, 0.9)]):
        opt.param_groups[0]["betas"] = np.array(betas)
        ref.hp["betas"] = betas
        g = _grads([p], t)
        opt.step(g)
        ref.step(g)
    opt.param_groups[0]["betas"][0] = 0.5  # in place, inside the array
    ref.hp["betas"] = (0.5, 0.9)
    g = _grads([p], 9)
    opt.step(g)
    ref.step(g)
    np.testing.assert_allclose(p, r, rtol=1e-14)


def test_popped_group_is_no_longer_stepped_and_the_rest_keeps_its_state():
    a, b = np.ones(3), np.ones(2)
    ra = np.ones(3)
    opt = fastgd.Adam([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    ref = ReferenceOptimizer(ref_adam, [ra], lr=0.1)
    g = _grads([a, b], 0)
    opt.step(g)
    ref.step(g[:1])
    removed = opt.param_groups.pop()
    assert removed["params"][0] is b
    b_before = b.copy()
    for t in range(3):
        g = _grads([a], t + 1)
        opt.step(g)  # one gradient per remaining parameter
        ref.step(g)
    np.testing.assert_allclose(a, ra, rtol=1e-14)
    np.testing.assert_array_equal(b, b_before)
    assert opt.state[0]["step"] == 4 and list(opt.state) == [0]
    with pytest.raises(ValueError, match="expected 1 gradients"):
        opt.step(_grads([a, b], 5))


def test_appended_group_dict_is_stepped_with_the_defaults_filled_in():
    a, b = np.ones(3), np.ones(2)
    ra, rb = np.ones(3), np.ones(2)
    opt = fastgd.SGD([a], lr=0.1, momentum=0.9)
    group = {"params": [b], "lr": 0.5}
    opt.param_groups.append(group)
    ref = fastgd.SGD([{"params": [ra]}, {"params": [rb], "lr": 0.5}], lr=0.1, momentum=0.9)
    for t in range(3):
        g = _grads([a, b], t)
        opt.step(g)
        ref.step(g)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)
    assert group["momentum"] == 0.9  # filled in the user's own dict, as add_param_group
    group["lr"] = 0.0  # the user's dict stays live
    b_before = b.copy()
    opt.step(_grads([a, b], 7))
    np.testing.assert_array_equal(b, b_before)


def test_assigned_params_are_stepped_and_keep_state_per_array():
    a, b, c = np.ones(3), np.ones(2), np.ones(4)
    ra, rb, rc = np.ones(3), np.ones(2), np.ones(4)
    opt = fastgd.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9)
    ref_ab = ReferenceOptimizer(ref_sgd, [ra, rb], lr=0.1, momentum=0.9)
    g = _grads([a, b], 0)
    opt.step(g)
    ref_ab.step(g)
    opt.param_groups[0]["params"] = [c]  # a leaves, c joins (torch steps c)
    ref_c = ReferenceOptimizer(ref_sgd, [rc], lr=0.1, momentum=0.9)
    a_before = a.copy()
    for t in range(3):
        gc, gb = _grads([c, b], t + 1)
        opt.step([gc, gb])
        ref_c.step([gc])
        ref_ab.step([None, gb])
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_allclose(b, rb, rtol=1e-14)  # b kept its momentum buffer
    np.testing.assert_allclose(c, rc, rtol=1e-14)
    opt.param_groups[1]["params"].append(a)  # an in-place edit of the list
    assert opt.params == (c, b, a)
    opt.step(_grads([c, b, a], 9))
    assert not np.array_equal(a, a_before)


def test_params_of_a_flat_group_replaced_by_other_arrays():
    flat = fastgd.FlatParams([(3,), (2,)], dtype=np.float64)
    extra = np.zeros(2)
    opt = fastgd.SGD(flat, lr=1.0)
    for g in flat.grads:
        g[...] = 1.0
    assert opt.step()
    opt.param_groups[0]["params"].append(extra)  # not attached: grads needed now
    with pytest.raises(ValueError, match="step\\(\\) needs grads"):
        opt.step()
    opt.step([*flat.grads, np.ones(2)])
    np.testing.assert_array_equal(extra, -1.0)
    np.testing.assert_array_equal(flat.params[0], -2.0)


@pytest.mark.parametrize(("edit", "exc", "match"), [
    (lambda opt, a, b: opt.param_groups.append("lr"), TypeError,
     r"param_groups\[2\] must be a dict with a 'params' entry"),
    (lambda opt, a, b: opt.param_groups.append({"lr": 0.1}), TypeError,
     r"param_groups\[2\] must be a dict with a 'params' entry"),
    (lambda opt, a, b: opt.param_groups[1].__setitem__("params", [a]), ValueError,
     "appear more than once"),
    (lambda opt, a, b: opt.param_groups[1].__setitem__("params", []), ValueError,
     "param group 1 got an empty parameter list"),
    (lambda opt, a, b: opt.param_groups[1]["params"].append(np.ones(2, np.float16)),
     TypeError, r"params\[2\] has dtype float16"),
    (lambda opt, a, b: opt.param_groups[1]["params"].append(np.ones(4)[::2]), ValueError,
     r"params\[2\] is not C-contiguous"),
    (lambda opt, a, b: opt.param_groups[1].__setitem__("params", 3), TypeError,
     r"param_groups\[1\]\['params'\] must be a list of arrays"),
    (lambda opt, a, b: opt.param_groups.append({"params": [np.ones(2)], "lr": -1.0}),
     ValueError, "Invalid learning rate: -1.0"),
    (lambda opt, a, b: setattr(opt, "param_groups", {"params": [a]}), TypeError,
     "param_groups must be a list of dicts"),
])
def test_bad_edits_are_refused_before_anything_changes(edit, exc, match):
    a, b = np.ones(3), np.ones(2)
    opt = fastgd.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    opt.step(_grads([a, b], 0))
    before = snapshot([a, b], opt)
    edit(opt, a, b)
    with pytest.raises(exc, match=match):
        opt.step(_grads([a, b], 1))
    assert_unchanged(before, [a, b])
    assert opt.steps_applied == 1


def test_edits_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s) for s in [(3,), (2, 2), (4,)]]
    ours = [a.copy() for a in init]
    theirs = [torch.tensor(a.copy()) for a in init]
    opt = fastgd.Adam([{"params": ours[:1]}, {"params": ours[1:2], "lr": 0.05}], lr=0.1,
                      betas=[0.9, 0.999])
    topt = torch.optim.Adam([{"params": theirs[:1]}, {"params": theirs[1:2], "lr": 0.05}],
                            lr=0.1, betas=[0.9, 0.999])

    def both(active):
        g = [rng.standard_normal(a.shape) for a in active]
        opt.step(g)
        for t in theirs:
            t.grad = None
        for k, gk in zip([i for i, a in enumerate(ours) if any(a is x for x in active)], g):
            theirs[k].grad = torch.tensor(gk)
        topt.step()

    both(ours[:2])
    opt.param_groups[0]["betas"][1] = 0.9  # torch keeps betas as a tuple: replace it there
    topt.param_groups[0]["betas"] = (0.9, 0.9)
    both(ours[:2])
    opt.param_groups[1]["params"] = [ours[2]]
    topt.param_groups[1]["params"] = [theirs[2]]
    both([ours[0], ours[2]])
    opt.param_groups.pop(0)
    topt.param_groups.pop(0)
    both([ours[2]])
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-12, atol=1e-15)


def test_state_dict_round_trip_after_edits():
    a, b = np.ones(3), np.ones(2)
    opt = fastgd.Adam([a], lr=0.1)
    opt.step(_grads([a], 0))
    opt.param_groups.append({"params": [b], "lr": 0.2})
    opt.step(_grads([a, b], 1))
    sd = opt.state_dict()
    a2, b2 = a.copy(), b.copy()
    opt2 = fastgd.Adam([{"params": [a2]}, {"params": [b2], "lr": 0.2}], lr=0.1)
    opt2.load_state_dict(sd)
    for t in range(2, 4):
        g = _grads([a, b], t)
        opt.step(g)
        opt2.step(g)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert sd["state"][0]["step"] == 2 and sd["state"][1]["step"] == 1


def test_state_dict_groups_are_copies():
    opt = fastgd.Adam([np.ones(2)], lr=0.1, betas=[0.9, 0.999])
    sd = opt.state_dict()
    sd["param_groups"][0]["betas"][0] = 0.1
    assert opt.param_groups[0]["betas"][0] == 0.9


def test_two_threads_stepping_one_optimizer_lose_no_update():
    p = np.zeros(1000)
    opt = fastgd.Adam([p], lr=1e-3)
    g = [np.ones(1000)]
    steps = 3000

    def run():
        for _ in range(steps):
            opt.step(g)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opt.steps_applied == 2 * steps and opt.state[0]["step"] == 2 * steps
    q = np.zeros(1000)
    seq = fastgd.Adam([q], lr=1e-3)
    for _ in range(2 * steps):
        seq.step(g)
    np.testing.assert_array_equal(p, q)


def test_copies_and_pickles_step_like_the_original():
    a = np.ones(3)
    opt = fastgd.Adam([{"params": [a]}], lr=0.1, betas=[0.9, 0.99])
    opt.step(_grads([a], 0))
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        (b,) = clone.params
        assert b is not a
        g = _grads([a], 1)
        clone.step(g)
        ref = copy.deepcopy(opt)
        ref.step(g)
        np.testing.assert_array_equal(b, ref.params[0])
        clone.param_groups[0]["betas"][1] = 2.0
        with pytest.raises(ValueError, match="index 1"):
            clone.step(g)


def _child_step(queue):
    p = np.zeros(200_000, np.float32)  # above the parallel threshold
    fastgd.Adam([p], lr=0.1).step([np.ones_like(p)])
    queue.put(float(p[0]))


def test_a_forked_child_runs_the_kernels_after_the_parent_ran_parallel_ones():
    p = np.zeros(200_000, np.float32)
    fastgd.Adam([p], lr=0.1).step([np.ones_like(p)])  # the parallel build, in the parent
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(-0.1, rel=1e-6)
