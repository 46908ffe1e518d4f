"""Weight averaging (EMA / SWA): in the step kernels, standalone, swapped in, saved, checked."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from fastgd import averaging as A
from tests import reference as R
from tests.conftest import CASES, DTYPES, RULES
from tests.helpers import assert_unchanged, snapshot

SHAPES = [(6, 5), (0,), (), (23,)]
AVERAGES = [fastgd.EMA(0.9), fastgd.EMA(0.3), fastgd.SWA(), fastgd.SWA(start=3, every=2)]
AVG_IDS = ["ema0.9", "ema0.3", "swa", "swa3-2"]


class Mirror:
    """The reference average of a list of parameters, kept step by step from their values."""

    def __init__(self, params, average):
        self.params, self.average = params, average
        self.avg = [None] * len(params)
        self.n = 0
        self.steps = 0

    def after_step(self):
        self.steps += 1
        if self.average.weights(self.n, self.steps) is None:
            return
        self.avg = [R.weight_average(a, p, self.n, self.average)
                    for a, p in zip(self.avg, self.params)]
        self.n += 1


def _grads(rng, shapes, dtype, t):
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if t == 2:
        grads[0] = None  # averaged by the second pass this step
    return grads


@pytest.mark.parametrize("average", AVERAGES, ids=AVG_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_average_is_the_reference_average_bit_for_bit(name, case, dtype, average, rng):
    cls, _, options = RULES[name]
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    opt = cls(params, **options[case], average=average)
    mirror = Mirror(params, average)
    for t in range(8):
        opt.step(_grads(rng, SHAPES, dtype, t))
        mirror.after_step()
        assert opt.n_averaged == mirror.n
        if mirror.n:
            for i, (a, ref) in enumerate(zip(opt.averaged(), mirror.avg)):
                assert a.dtype == dtype and a.shape == ref.shape
                np.testing.assert_array_equal(a, ref, err_msg=f"param {i} step {t}")


@pytest.mark.parametrize("average", AVERAGES[:3], ids=AVG_IDS[:3])
def test_flat_params_and_two_groups(average, rng):
    flat = fastgd.FlatParams([(7, 3), (5,), (0,), (4, 2)], np.float32)
    for p in flat.params:
        p[...] = rng.standard_normal(p.shape)
    groups = [{"params": flat.select([0, 1])}, {"params": flat.select([2, 3]), "lr": 0.05}]
    opt = fastgd.Adam(groups, lr=0.01, average=average)
    mirror = Mirror(list(flat.params), average)
    for _ in range(5):
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        opt.step()
        mirror.after_step()
    for a, ref in zip(opt.averaged(), mirror.avg):
        np.testing.assert_array_equal(a, ref)


def test_fused_rules_average_in_their_kernel_without_a_second_pass(monkeypatch, rng):
    calls = []
    real = A.average_into
    monkeypatch.setattr("fastgd.optim.base.average_into",
                        lambda p, a, w: (calls.append(p.size), real(p, a, w)))
    flat = fastgd.FlatParams([(10,), (4, 4)], np.float64)
    opt = fastgd.Adam(flat, lr=0.1, average=fastgd.EMA(0.5))
    for _ in range(3):
        flat.grads[0][...] = rng.standard_normal(10)
        flat.grads[1][...] = rng.standard_normal((4, 4))
        opt.step()
    assert calls == []  # one kernel per step: the update and the average together
    params = [rng.standard_normal(8), rng.standard_normal(3)]
    opt = fastgd.SGD(params, lr=0.1, average=fastgd.EMA(0.5))
    opt.step([np.ones(8), None])
    assert calls == [3]  # only the parameter without a gradient takes the second pass
    # rules that update each parameter whole: one pass after the update, per segment
    calls.clear()
    w = rng.standard_normal((6, 4))
    fastgd.Muon([w], lr=0.01, average=fastgd.SWA()).step([rng.standard_normal((6, 4))])
    assert calls == [24]


@pytest.mark.parametrize("average", AVERAGES[:3], ids=AVG_IDS[:3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rules_that_update_each_parameter_whole(average, dtype, rng):
    tables = [rng.standard_normal((20, 3)).astype(dtype)]
    cases = [
        (fastgd.Muon, [rng.standard_normal((6, 4)).astype(dtype)], {"lr": 0.02}),
        (fastgd.Adafactor, [rng.standard_normal(s).astype(dtype) for s in SHAPES], {}),
        (fastgd.SparseAdam, tables, {"lr": 0.1}),
    ]
    for cls, params, hp in cases:
        opt = cls(params, **hp, average=average)
        mirror = Mirror(params, average)
        for _ in range(4):
            if cls is fastgd.SparseAdam:
                rows = rng.integers(0, 20, 5)
                grads = [fastgd.SparseGrad(rows, rng.standard_normal((5, 3)).astype(dtype))]
            else:
                grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
            opt.step(grads)
            mirror.after_step()
        for a, ref in zip(opt.averaged(), mirror.avg):
            np.testing.assert_array_equal(a, ref, err_msg=cls.__name__)


def test_swa_start_and_every_choose_the_steps():
    w = np.zeros(1)
    opt = fastgd.SGD([w], lr=1.0, average=fastgd.SWA(start=2, every=3))
    seen = []
    for _ in range(9):
        opt.step([-np.ones(1)])  # w = step count
        seen.append(opt.n_averaged)
    assert seen == [0, 0, 0, 0, 1, 1, 1, 2, 2]  # steps start + every = 5 and 8
    assert opt.averaged()[0][0] == (5 + 8) / 2


def test_ema_of_a_parameter_without_gradients_follows_it():
    a, b = np.zeros(2), np.ones(2)
    opt = fastgd.SGD([a, b], lr=1.0, average=fastgd.EMA(0.5))
    opt.step([-np.ones(2), None])
    b[...] = 3.0  # changed by someone else: the average still follows
    opt.step([-np.ones(2), None])
    np.testing.assert_array_equal(opt.averaged()[1], [2.0, 2.0])
    np.testing.assert_array_equal(opt.averaged()[0], [1.5, 1.5])


def test_skipped_steps_are_not_averaged():
    w = np.zeros(3)
    opt = fastgd.SGD([w], lr=1.0, nonfinite="skip", average=fastgd.SWA())
    opt.step([-np.ones(3)])
    assert not opt.step([np.array([1.0, np.nan, 0.0])])
    assert opt.n_averaged == 1
    np.testing.assert_array_equal(opt.averaged()[0], w)


def test_swap_averaged_puts_the_average_in_and_takes_it_out(rng):
    flat = fastgd.FlatParams([(5,), (2, 2)], np.float32)
    opt = fastgd.Adam(flat, lr=0.1, average=fastgd.EMA(0.8))
    for _ in range(3):
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        opt.step()
    trained = [p.copy() for p in flat.params]
    averaged = [a.copy() for a in opt.averaged()]
    with opt.swap_averaged():
        for p, a in zip(flat.params, averaged):
            np.testing.assert_array_equal(p, a)  # the views see the averaged weights
        before = snapshot(list(flat.params))
        with pytest.raises(RuntimeError, match="inside swap_averaged"):
            opt.step()
        with pytest.raises(RuntimeError, match="inside swap_averaged"):
            opt.state_dict()
        with pytest.raises(RuntimeError, match="inside swap_averaged"):
            with opt.swap_averaged():
                pass
        with pytest.raises(RuntimeError, match="averaged weights are the"):
            opt.averaged()
        assert_unchanged(before, list(flat.params))
    for p, t in zip(flat.params, trained):
        np.testing.assert_array_equal(p, t)
    for a, t in zip(opt.averaged(), averaged):
        np.testing.assert_array_equal(a, t)


def test_swap_back_after_an_exception_in_the_block():
    w = np.zeros(2)
    opt = fastgd.SGD([w], lr=1.0, average=fastgd.SWA())
    opt.step([-np.ones(2)])
    opt.step([-np.ones(2)])
    with pytest.raises(KeyError), opt.swap_averaged():
        raise KeyError("evaluation failed")
    np.testing.assert_array_equal(w, [2.0, 2.0])
    assert opt.step([-np.ones(2)])


def _train(opt, params, rng, steps, dtype=np.float64):
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in params])


@pytest.mark.parametrize("average", AVERAGES[::2], ids=AVG_IDS[::2])
def test_state_dict_resumes_the_average_exactly(average):
    def fresh():
        return [np.linspace(-1, 1, 12).reshape(3, 4), np.arange(5.0)]

    a = fresh()
    opt_a = fastgd.NAdam(a, lr=0.05, average=average)
    _train(opt_a, a, np.random.default_rng(1), 9)
    b = fresh()
    opt_b = fastgd.NAdam(b, lr=0.05, average=average)
    rng = np.random.default_rng(1)
    _train(opt_b, b, rng, 4)
    sd = opt_b.state_dict()
    assert sd["average"] == {**average.spec(), "n_averaged": opt_b.n_averaged}
    assert all("average" in entry for entry in sd["state"].values())
    c = [x.copy() for x in b]
    opt_c = fastgd.NAdam(c, lr=0.05, average=average)
    opt_c.load_state_dict(sd)
    _train(opt_c, c, rng, 5)
    assert opt_c.n_averaged == opt_a.n_averaged
    for x, y in zip(opt_a.averaged(), opt_c.averaged()):
        np.testing.assert_array_equal(x, y)


def test_checkpoints_hold_the_average(tmp_path, rng):
    params = [rng.standard_normal((4, 3)), rng.standard_normal(6)]
    opt = fastgd.Adam(params, lr=0.1, average=fastgd.EMA(0.7))
    _train(opt, params, rng, 3)
    fastgd.save(tmp_path / "ck.npz", params=params, optimizer=opt)
    params2 = [np.zeros_like(p) for p in params]
    opt2 = fastgd.Adam(params2, lr=0.1, average=fastgd.EMA(0.7))
    fastgd.load(tmp_path / "ck.npz", params=params2, optimizer=opt2)
    assert opt2.n_averaged == 3
    for x, y in zip(opt.averaged(), opt2.averaged()):
        np.testing.assert_array_equal(x, y)
    other = fastgd.Adam([np.zeros_like(p) for p in params], lr=0.1,
                        average=fastgd.EMA(0.9))
    before = snapshot(other.params, other)
    with pytest.raises(fastgd.CheckpointError, match="average"):
        fastgd.load(tmp_path / "ck.npz", params=other.params, optimizer=other)
    assert_unchanged(before, other.params, other)


def test_loading_checks_the_averaging_and_changes_nothing(rng):
    params = [rng.standard_normal(5)]
    ema = fastgd.Adam(params, lr=0.1, average=fastgd.EMA(0.9))
    _train(ema, params, rng, 2)
    sd = ema.state_dict()
    for target, match in [
        (fastgd.Adam([np.zeros(5)], lr=0.1), "without average="),
        (fastgd.Adam([np.zeros(5)], lr=0.1, average=fastgd.SWA()), "average of EMA"),
    ]:
        before = snapshot(target.params, target)
        with pytest.raises(ValueError, match=match):
            target.load_state_dict(sd)
        assert_unchanged(before, target.params, target)
    bad = dict(sd, average={**sd["average"], "n_averaged": -1})
    target = fastgd.Adam([np.zeros(5)], lr=0.1, average=fastgd.EMA(0.9))
    with pytest.raises(ValueError, match="n_averaged"):
        target.load_state_dict(bad)
    assert target.n_averaged == 0
    wrong_shape = {**sd, "state": {0: {**sd["state"][0], "average": np.zeros(4)}}}
    with pytest.raises(ValueError, match="'average'"):
        target.load_state_dict(wrong_shape)
    assert target.n_averaged == 0


def test_a_state_dict_without_averages_starts_them_again(rng):
    params = [rng.standard_normal(5)]
    plain = fastgd.Adam(params, lr=0.1)
    _train(plain, params, rng, 2)
    opt = fastgd.Adam([p.copy() for p in params], lr=0.1, average=fastgd.EMA(0.9))
    opt.load_state_dict(plain.state_dict())
    assert opt.n_averaged == 0
    opt.step([np.ones(5)])
    np.testing.assert_array_equal(opt.averaged()[0], opt.params[0])  # the first copies


def test_a_parameter_added_later_enters_at_its_value(rng):
    # its average starts at its value, as if it had had that value at every averaged step
    a = rng.standard_normal(4)
    opt = fastgd.SGD([a], lr=0.1, average=fastgd.SWA())
    opt.step([np.ones(4)])
    opt.step([np.ones(4)])
    b = np.full(3, 7.0)
    opt.add_param_group({"params": [b]})
    opt.step([np.ones(4), np.ones(3)])  # b: 7 -> 6.9; the third averaged step
    np.testing.assert_allclose(opt.averaged()[1], (7.0 + 7.0 + 6.9) / 3, rtol=1e-15)


def test_bad_averaging_arguments_are_clear_errors():
    w = np.zeros(2)
    with pytest.raises(TypeError, match=r"average must be None, fastgd\.EMA"):
        fastgd.Adam([w], average="ema")
    with pytest.raises(ValueError, match="decay"):
        fastgd.EMA(1.5)
    with pytest.raises(TypeError, match="decay"):
        fastgd.EMA("0.9")
    with pytest.raises(ValueError, match="every"):
        fastgd.SWA(every=0)
    with pytest.raises(ValueError, match="start"):
        fastgd.SWA(start=-1)
    with pytest.raises(TypeError, match="LBFGS does not take average="):
        fastgd.LBFGS([w], average=fastgd.EMA())
    opt = fastgd.Adam([w])
    with pytest.raises(RuntimeError, match="keeps no weight average"):
        opt.averaged()
    opt = fastgd.Adam([w], average=fastgd.SWA(start=5))
    opt.step([np.ones(2)])
    with pytest.raises(RuntimeError, match="no step has been averaged"):
        opt.averaged()
    with pytest.raises(RuntimeError, match="no step has been averaged"):
        opt.swap_averaged()


def test_warmup_prepares_the_averaging_kernels(monkeypatch):
    from fastgd import _backend

    monkeypatch.setattr(_backend, "_kernel_cache", {})
    w = np.ones(3)
    opt = fastgd.Adam([w], lr=0.1, average=fastgd.EMA()).warmup()
    assert opt.n_averaged == 0 and (w == 1).all()
    assert ("adam", "adam", (("amsgrad", False), ("average", True))) in _backend._kernel_cache


# -- standalone -----------------------------------------------------------------------------


@pytest.mark.parametrize("average", AVERAGES, ids=AVG_IDS)
def test_weight_average_standalone_equals_the_optimizers(average, rng):
    flat = fastgd.FlatParams([(6, 2), (3,), (0,)], np.float32)
    for p in flat.params:
        p[...] = rng.standard_normal(p.shape)
    twin = [p.copy() for p in flat.params]
    opt = fastgd.Adam(twin, lr=0.1, average=average)
    plain = fastgd.Adam(flat, lr=0.1)
    wa = fastgd.WeightAverage(flat, average)
    assert len(wa._spans) == 1  # one kernel launch per update over a FlatParams
    for _ in range(6):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in twin]
        for g, fg in zip(grads, flat.grads):
            fg[...] = g
        plain.step()
        opt.step(grads)
        wa.update()
    assert wa.n_averaged == opt.n_averaged and wa.steps == 6
    for x, y in zip(wa.averaged, opt.averaged()):
        np.testing.assert_array_equal(x, y)
    with wa.swap():
        for p, y in zip(flat.params, opt.averaged()):
            np.testing.assert_array_equal(p, y)
        with pytest.raises(RuntimeError, match="inside swap"):
            wa.update()
    sd = wa.state_dict()
    other = fastgd.WeightAverage([p.copy() for p in flat.params], average)
    other.load_state_dict(sd)
    for x, y in zip(wa.averaged, other.averaged):
        np.testing.assert_array_equal(x, y)
    assert (other.n_averaged, other.steps) == (wa.n_averaged, wa.steps)


def test_weight_average_errors_change_nothing(rng):
    params = [rng.standard_normal(3), rng.standard_normal(2).astype(np.float32)]
    wa = fastgd.WeightAverage(params, fastgd.EMA(0.5))
    wa.update()
    sd = wa.state_dict()
    for bad, match in [
        ({**sd, "average": fastgd.SWA().spec()}, "average of SWA"),
        ({**sd, "averaged": sd["averaged"][:1]}, "1 averaged arrays"),
        ({**sd, "averaged": [np.zeros(4), sd["averaged"][1]]}, r"averaged'\]\[0\]"),
        ({**sd, "n_averaged": 1.5}, "n_averaged"),
        ({k: v for k, v in sd.items() if k != "steps"}, "keys"),
    ]:
        other = fastgd.WeightAverage([p.copy() for p in params], fastgd.EMA(0.5))
        with pytest.raises(ValueError, match=match):
            other.load_state_dict(bad)
        assert other.n_averaged == 0 and all((a == 0).all() for a in other.averaged)
    with pytest.raises(TypeError, match="got None"):
        fastgd.WeightAverage(params, None)
    with pytest.raises(ValueError, match="empty"):
        fastgd.WeightAverage([], fastgd.EMA())
    with pytest.raises(TypeError, match="list of arrays"):
        fastgd.WeightAverage(np.zeros(3), fastgd.EMA())
    with pytest.raises(ValueError, match=r"read-only|writeable"):
        ro = np.zeros(3)
        ro.flags.writeable = False
        fastgd.WeightAverage([ro], fastgd.EMA())
    w = np.arange(3.0)
    for twice, match in [([w, params[0], w], r"params\[2\] is params\[0\] again"),
                         ([w, w[:]], r"params\[1\] is params\[0\] again")]:  # a view
        before = snapshot(twice)
        with pytest.raises(ValueError, match=match):
            fastgd.WeightAverage(twice, fastgd.EMA())
        assert_unchanged(before, twice)


# -- torch.optim.swa_utils ------------------------------------------------------------------


@pytest.mark.parametrize("average", AVERAGES, ids=AVG_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_averaged_model(average, dtype, rng):
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    shapes = [(6, 5), (), (23,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    opt = fastgd.Adam(params, lr=0.05, average=average)
    module = torch.nn.ParameterList(
        [torch.nn.Parameter(torch.tensor(p.copy())) for p in params])
    if average.kind == "ema":
        torch_avg = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(average.decay))
    else:
        torch_avg = AveragedModel(module)  # its default: the SWA running mean
    for step in range(1, 11):
        averaged = average.weights(opt.n_averaged, step) is not None
        opt.step([rng.standard_normal(s).astype(dtype) for s in shapes])
        with torch.no_grad():
            for tp, p in zip(module, params):
                tp.copy_(torch.from_numpy(p))
        if averaged:
            torch_avg.update_parameters(module)
        assert opt.n_averaged == int(torch_avg.n_averaged)
    # torch's vectorized lerp fuses a multiply-add (its scalar tail does not): a few ulp
    eps = np.finfo(dtype).eps
    for ours, theirs in zip(opt.averaged(), torch_avg.module):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=8 * eps, atol=8 * eps)


@pytest.mark.parametrize("average", [fastgd.EMA(0.8), fastgd.SWA(start=1, every=2)])
def test_separate_arrays_average_and_swap_in_one_launch_per_dtype(average, monkeypatch, rng):
    # a list of separate arrays of two dtypes: one multi-array launch per dtype for an
    # update and for each swap, with the results of one WeightAverage per array
    from fastgd import _backend

    shapes = [(40_000,), (3, 5), (), (0,), (17,), (2, 2)]
    params = [np.asarray(rng.standard_normal(s), dtype=np.float32 if i % 2 else np.float64)
              for i, s in enumerate(shapes)]
    each = [p.copy() for p in params]
    wa = fastgd.WeightAverage(params, average)
    refs = [fastgd.WeightAverage([p], average) for p in each]
    launches = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda m, n, *a: launches.append(n) or real(m, n, *a))
    for _ in range(4):
        delta = [rng.standard_normal(p.shape) for p in params]
        for p, e, d in zip(params, each, delta):
            p += d
            e += d
        launches.clear()
        averaged = wa.update()
        assert len(launches) == (2 if averaged else 0)  # float64 arrays, float32 arrays
        for r in refs:
            assert r.update() == averaged
        for a, r in zip(wa.averaged, refs):
            np.testing.assert_array_equal(a, r.averaged[0])
    launches.clear()
    with wa.swap():
        assert launches == ["swap", "swap"]
        for p, r in zip(params, refs):
            np.testing.assert_array_equal(p, r.averaged[0])
    for p, e in zip(params, each):
        np.testing.assert_array_equal(p, e)
