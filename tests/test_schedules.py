"""Schedules: closed forms, torch's schedulers as oracles, checks at build time, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastgd
from fastgd import schedules as S
from tests.helpers import assert_unchanged, snapshot


def _torch_lrs(make_sched, n, lr=1.0):
    torch = pytest.importorskip("torch")
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(torch.optim.lr_scheduler, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


TORCH_CASES = [
    (S.step_decay(1.0, 7, 0.5), lambda m, o: m.StepLR(o, 7, 0.5)),
    (S.multi_step(1.0, [5, 12, 30], 0.3), lambda m, o: m.MultiStepLR(o, [5, 12, 30], 0.3)),
    (S.exponential_decay(1.0, 0.95), lambda m, o: m.ExponentialLR(o, 0.95)),
    (S.cosine(1.0, 40, end_value=0.1), lambda m, o: m.CosineAnnealingLR(o, 40, eta_min=0.1)),
    (S.cosine_warm_restarts(1.0, 5, 1, 0.01),
     lambda m, o: m.CosineAnnealingWarmRestarts(o, 5, 1, 0.01)),
    (S.cosine_warm_restarts(1.0, 3, 2), lambda m, o: m.CosineAnnealingWarmRestarts(o, 3, 2)),
    (S.polynomial(1.0, 0.0, 2.0, 30), lambda m, o: m.PolynomialLR(o, 30, 2.0)),
    (S.linear(0.25, 1.0, 10), lambda m, o: m.LinearLR(o, 0.25, 1.0, 10)),
    (S.one_cycle(1.0, 50), lambda m, o: m.OneCycleLR(o, 1.0, total_steps=50,
                                                        cycle_momentum=False)),
    (S.one_cycle(2.0, 40, pct_start=0.25, anneal_strategy="linear", three_phase=True),
     lambda m, o: m.OneCycleLR(o, 2.0, total_steps=40, pct_start=0.25,
                               anneal_strategy="linear", three_phase=True,
                               cycle_momentum=False)),
]


TORCH_CASES += [
    (S.cyclic(0.1, 1.0, step_size_up=5),
     lambda m, o: m.CyclicLR(o, 0.1, 1.0, step_size_up=5, cycle_momentum=False)),
    (S.cyclic(0.2, 1.0, step_size_up=4, step_size_down=7, mode="triangular2"),
     lambda m, o: m.CyclicLR(o, 0.2, 1.0, step_size_up=4, step_size_down=7,
                             mode="triangular2", cycle_momentum=False)),
    (S.cyclic(0.05, 0.8, step_size_up=6, mode="exp_range", gamma=0.97),
     lambda m, o: m.CyclicLR(o, 0.05, 0.8, step_size_up=6, mode="exp_range", gamma=0.97,
                             cycle_momentum=False)),
    (S.lambda_lr(1.0, lambda t: 1 / (1 + 0.3 * t)),
     lambda m, o: m.LambdaLR(o, lambda t: 1 / (1 + 0.3 * t))),
    (S.multiplicative(1.0, lambda t: 0.9 if t % 3 else 1.05),
     lambda m, o: m.MultiplicativeLR(o, lambda t: 0.9 if t % 3 else 1.05)),
]


@pytest.mark.parametrize(("ours", "theirs"), TORCH_CASES, ids=lambda x: getattr(x, "name", ""))
def test_matches_torch_scheduler(ours, theirs):
    # one_cycle ends at total_steps; torch's CosineAnnealingLR swings back up after T_max
    # where ours (as optax's) holds end_value
    n = {"one_cycle": ours._params.get("total_steps"), "cosine": 41}.get(ours.name, 60)
    expected = _torch_lrs(theirs, n)
    got = [ours(t) for t in range(n)]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_closed_forms():
    assert S.constant(0.3)(10**9) == 0.3
    assert S.inverse_time_decay(1.0, 0.5, 2, staircase=True)(5) == 1.0 / (1 + 0.5 * 2)
    assert S.exponential_decay(1.0, 0.5, 2, staircase=True)(3) == 0.5
    assert S.exponential_decay(1.0, 0.5, end_value=0.3)(10) == 0.3
    assert S.polynomial(1.0, 0.5, 1.0, 10, transition_begin=5)(5) == 1.0
    assert S.polynomial(1.0, 0.5, 1.0, 10, transition_begin=5)(100) == 0.5
    assert S.cosine(1.0, 10, exponent=2.0)(5) == pytest.approx(0.25)
    f = S.join([S.linear(0.0, 1.0, 10), S.cosine(1.0, 10)], [10])
    assert f(5) == 0.5 and f(10) == 1.0 and f(15) == pytest.approx(0.5) and f(99) == 0.0


@pytest.mark.parametrize(("build", "exc", "match"), [
    (lambda: S.constant(-1.0), ValueError, "Invalid learning rate"),
    (lambda: S.constant(math.nan), ValueError, "nan"),
    (lambda: S.step_decay(1.0, 0), ValueError, "step_size must be a positive integer"),
    (lambda: S.step_decay(1.0, 2.5), ValueError, "step_size must be a positive integer"),
    (lambda: S.multi_step(1.0, [5, 3]), ValueError, "strictly increasing"),
    (lambda: S.exponential_decay(1.0, 0.0), ValueError, "decay_rate must be > 0"),
    (lambda: S.polynomial(1.0, 0.0, -1.0, 10), ValueError, "power must be > 0"),
    (lambda: S.cosine(1.0, 0), ValueError, "decay_steps must be a positive integer"),
    (lambda: S.cosine_warm_restarts(1.0, 5, 0), ValueError, "T_mult must be an integer >= 1"),
    (lambda: S.one_cycle(1.0, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda: S.one_cycle(1.0, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda: S.join([S.constant(1.0)], [3]), ValueError, "needs 0 boundaries"),
    (lambda: S.join([S.constant(1.0), 0.5], [3]), TypeError, "fastgd schedules"),
    (lambda: S.from_spec({"schedule": "nope"}), ValueError, "not a schedule spec"),
    (lambda: S.from_spec({"schedule": "cosine", "x": 1}), ValueError, "bad arguments"),
])
def test_schedule_arguments_are_checked_when_built(build, exc, match):
    with pytest.raises(exc, match=match):
        build()


def test_schedule_call_checks_the_count():
    f = S.constant(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        f(-1)
    with pytest.raises(TypeError, match="integer step count"):
        f(1.5)
    assert f(np.int64(3)) == 1.0


def test_spec_round_trip():
    f = S.join([S.linear(0.0, 0.1, 5), S.one_cycle(0.1, 20)], [5])
    g = S.from_spec(f.spec())
    assert g == f and [g(t) for t in range(30)] == [f(t) for t in range(30)]


def test_scheduled_optimizer_uses_the_lr_of_each_applied_step():
    w = np.zeros(1)
    sched = S.step_decay(1.0, 2, 0.5)
    opt = fastgd.SGD([w], lr=sched)
    for _ in range(4):
        opt.step([np.ones(1)])
    assert w[0] == -(1.0 + 1.0 + 0.5 + 0.5)
    assert opt.steps_applied == 4


def test_schedule_resumes_through_state_dict():
    sched = S.cosine(0.1, 20)
    a = [np.ones(3)]
    opt = fastgd.AdamW(a, lr=sched)
    g = [np.full(3, 0.5)]
    for _ in range(7):
        opt.step(g)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["lr"] == sched.spec()
    b = [a[0].copy()]
    opt2 = fastgd.AdamW(b, lr=0.5)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == sched
    for _ in range(5):
        opt.step(g)
        opt2.step(g)
    np.testing.assert_array_equal(a[0], b[0])


def test_scheduled_lr_is_checked_before_any_kernel():
    # lr values set in param_groups between steps are checked before any kernel runs
    w = np.ones(2)
    opt = fastgd.SGD([w], lr=S.constant(0.1))
    with pytest.raises(TypeError, match=r"fastgd\.schedules schedule"):
        opt.param_groups[0]["lr"] = lambda t: 0.1
        opt.step([np.ones(2)])
    opt.param_groups[0]["lr"] = S.constant(0.1)
    before = snapshot([w], opt)
    with pytest.raises(TypeError, match="lr must be a real number"):
        opt.param_groups[0]["lr"] = "0.1"
        opt.step([np.ones(2)])
    assert_unchanged(before, [w])


def test_reduce_lr_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    metrics = [5, 4, 4, 4, 4, 3.9999, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 1, 1, 1, 1, 1, 1, 1]
    kw = {"mode": "min", "factor": 0.5, "patience": 2, "threshold": 1e-3, "cooldown": 1,
          "min_lr": 0.05}
    w = np.zeros(1)
    opt = fastgd.SGD([w], lr=1.0)
    ours = S.ReduceLROnPlateau(opt, **kw)
    tp = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([tp], lr=1.0)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kw)
    for m in metrics:
        ours.step(m)
        theirs.step(m)
        assert opt.param_groups[0]["lr"] == topt.param_groups[0]["lr"]
    for mode, tm in (("max", "abs"),):
        opt2 = fastgd.SGD([np.zeros(1)], lr=1.0)
        o = S.ReduceLROnPlateau(opt2, mode=mode, threshold_mode=tm, patience=0)
        topt2 = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        t = torch.optim.lr_scheduler.ReduceLROnPlateau(topt2, mode=mode, threshold_mode=tm,
                                                       patience=0)
        for m in [1, 2, 2, 1, 3, 3]:
            o.step(m)
            t.step(m)
            assert opt2.param_groups[0]["lr"] == pytest.approx(topt2.param_groups[0]["lr"])


def test_reduce_lr_on_plateau_checks_and_state():
    opt = fastgd.SGD([np.zeros(1)], lr=1.0)
    with pytest.raises(ValueError, match=r"Factor should be < 1\.0"):
        S.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be"):
        S.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(TypeError, match="schedule as lr"):
        S.ReduceLROnPlateau(fastgd.SGD([np.zeros(1)], lr=S.constant(0.1)))
    r = S.ReduceLROnPlateau(opt, patience=0)
    r.step(1.0)
    r.step(2.0)
    st = r.state_dict()
    r2 = S.ReduceLROnPlateau(fastgd.SGD([np.zeros(1)], lr=1.0), patience=0)
    r2.load_state_dict(st)
    assert r2.state_dict() == st
    with pytest.raises(ValueError, match="must have keys"):
        r2.load_state_dict({"best": 1.0})
    assert r2.state_dict() == st


def test_bold_driver_grows_shrinks_and_undoes():
    w = np.array([2.0])
    opt = fastgd.SGD([w], lr=0.1)
    driver = S.BoldDriver(opt, increase=1.5, decrease=0.5, undo=True)
    assert driver.step(float(w[0] ** 2))          # first loss: accepted, lr grows
    assert opt.param_groups[0]["lr"] == pytest.approx(0.15)
    opt.param_groups[0]["lr"] = 5.0                # a step far too long
    opt.step([2 * w.copy()])                       # w: 2 - 5*4 = -18
    assert w[0] == -18.0
    assert not driver.step(float(w[0] ** 2))       # worse: undone, lr halved
    assert w[0] == 2.0 and opt.param_groups[0]["lr"] == 2.5
    assert driver.last_loss == 4.0
    with pytest.raises(ValueError, match="decrease must be in"):
        S.BoldDriver(opt, decrease=0.0)


def test_multiplicative_resumes_and_function_schedules_are_refused_by_checkpoints(tmp_path):
    f = S.multiplicative(1.0, lambda t: 0.5)
    assert f(3) == 0.125 and f(1) == 0.5  # any order: a look-up once computed
    g = S.from_spec(f.spec())
    assert g(3) == 0.125 and g == S.from_spec(g.spec())
    p = [np.ones(2)]
    opt = fastgd.SGD(p, lr=S.lambda_lr(0.1, lambda t: 2.0))
    opt.step([np.ones(2)])
    np.testing.assert_allclose(p[0], 0.8)
    with pytest.raises(TypeError, match="cannot be stored in a checkpoint"):
        fastgd.save(tmp_path / "x.npz", params=p, optimizer=opt)
    assert not list(tmp_path.iterdir())
    bad = fastgd.SGD([np.ones(2)], lr=S.lambda_lr(0.1, lambda t: -1.0))
    with pytest.raises(ValueError, match="schedule at step 0"):
        bad.step([np.ones(2)])


@pytest.mark.parametrize(("build", "match"), [
    (lambda: S.cyclic(0.1, 1.0, mode="sine"), "mode must be"),
    (lambda: S.cyclic(0.1, 1.0, step_size_up=0), "step_size_up must be a positive integer"),
    (lambda: S.cyclic(0.1, 1.0, mode="exp_range", gamma=1.5), r"gamma must be in \(0, 1\]"),
    (lambda: S.lambda_lr(0.1, 3.0), "fn must be a function"),
    (lambda: S.multiplicative(-1.0, lambda t: 1.0), "Invalid learning rate"),
])
def test_new_schedules_are_checked_when_built(build, match):
    with pytest.raises((TypeError, ValueError), match=match):
        build()
