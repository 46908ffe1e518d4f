"""torch's own optimizer configurations (``optim_db``) and generic tests, run against fastgd.

Every CPU configuration torch's test suite uses (``torch.testing._internal.
common_optimizers``: each ``OptimizerInfo``'s inputs with the global ``foreach`` /
``fused`` / ``differentiable`` / ``maximize`` variants, 187 of them in torch 2.13) is
built as a fastgd optimizer with the same keyword arguments, read from the installed
torch at test time, and stepped beside torch.optim's:

* parity of the parameters and of every state buffer, step by step (float64);
* ``differentiable=True`` is refused with a clear error (fastgd has no autograd);
* torch's ``test_optim.py`` generic checks: a step with every gradient None changes
  nothing, a state dict round trip continues bit for bit, a state dict without
  ``maximize`` in its groups (``test_can_load_older_state_dict``) loads with the default,
  ``add_param_group`` with the config's hyperparameters, and size-0 parameters.

Needs torch and expecttest (which torch's test module imports); skipped without them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastgd
from fastgd.optim.registry import RULES
from tests.helpers import assert_unchanged, snapshot

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")
co = pytest.importorskip("torch.testing._internal.common_optimizers")

BY_TORCH = {rule.torch: rule for rule in RULES.values() if rule.torch}
STEPS = 8


def _configs():
    for info in co.optim_db:
        name = info.optim_cls.__name__
        inputs = co._get_optim_inputs_including_global_cliquey_kwargs(
            "cpu", torch.float64, info)
        for k, oi in enumerate(inputs):
            yield pytest.param(name, oi.kwargs, id=f"{name}-{k}-{oi.desc}".replace(" ", "_"))


CONFIGS = list(_configs())


def test_every_torch_optimizer_has_a_fastgd_class():
    torch_names = {info.optim_cls.__name__ for info in co.optim_db}
    assert torch_names <= set(BY_TORCH), torch_names - set(BY_TORCH)
    assert len(CONFIGS) >= 150


def _plain(v):
    """A torch configuration value as fastgd takes it (a Tensor lr is a number)."""
    if torch.is_tensor(v):
        return v.item()
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    return v


def _kwargs(kwargs):
    return {k: _plain(v) for k, v in kwargs.items()}


@pytest.fixture
def torch64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch's scalar state in float64
    yield
    torch.set_default_dtype(old)


class Problem:
    """Parameters and per-step gradients for one optimizer, in NumPy and torch."""

    def __init__(self, name, seed=0):
        self.name = name
        self.rng = np.random.default_rng(seed)
        if name == "Muon":
            self.shapes = [(10, 5), (4, 6)]
        elif name == "SparseAdam":
            self.shapes = [(20, 4), (7, 3)]
        elif name == "Adafactor":  # torch divides by a size-0 parameter's size
            self.shapes = [(10, 5), (10,), ()]
        else:
            self.shapes = [(10, 5), (10,), (), (0,)]
        self.init = [self.rng.standard_normal(s) for s in self.shapes]

    def arrays(self):
        return [a.copy() for a in self.init]

    def tensors(self):
        return [torch.tensor(a.copy()) for a in self.init]

    def grads(self):
        """One step's gradients: (fastgd's, torch's)."""
        if self.name == "SparseAdam":
            ours, theirs = [], []
            for s in self.shapes:
                rows = self.rng.integers(0, s[0], 6)
                vals = self.rng.standard_normal((6, *s[1:]))
                ours.append(fastgd.SparseGrad(rows, vals))
                theirs.append(torch.sparse_coo_tensor(torch.tensor(rows)[None],
                                                      torch.tensor(vals), s,
                                                      check_invariants=True))
            return ours, theirs
        gs = [self.rng.standard_normal(s) for s in self.shapes]
        return gs, [torch.tensor(g) for g in gs]


def _rosen(x):
    f = float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return f, g


def _lbfgs_pair(kwargs):
    sizes = [3, 4]
    x0 = np.random.default_rng(1).standard_normal(7) * 0.5
    ours = list(np.split(x0.copy(), np.cumsum(sizes)[:-1]))
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in ours]
    opt = fastgd.LBFGS(ours, **kwargs)
    topt = torch.optim.LBFGS(theirs, **kwargs)

    def closure():
        f, g = _rosen(np.concatenate(ours))
        return f, np.split(g, np.cumsum(sizes)[:-1])

    def tclosure():
        topt.zero_grad()
        x = torch.cat(theirs)
        loss = torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
        loss.backward()
        return loss

    return opt, topt, ours, theirs, closure, tclosure


def _compare(name, opt, topt, ours, theirs, where, rtol=1e-10):
    for i, (a, t) in enumerate(zip(ours, theirs)):
        t = t.detach().numpy()
        np.testing.assert_allclose(a, t, rtol=rtol, atol=rtol / 100,
                                   err_msg=f"{where} param {i}")
        tstate = topt.state.get(topt.param_groups[0]["params"][i] if i < len(
            topt.param_groups[0]["params"]) else None, {})
        for key, v in tstate.items():
            if torch.is_tensor(v) and v.dim() > 0 and key in opt.state.get(i, {}):
                np.testing.assert_allclose(opt.state[i][key], v.numpy(), rtol=rtol,
                                           atol=rtol / 100, err_msg=f"{where} state[{i}][{key}]")


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS)
def test_config_matches_torch(name, kwargs, torch64, monkeypatch):
    cls = BY_TORCH[name].cls
    if name == "Muon":
        # torch casts the momentum to bfloat16 for Newton-Schulz (``grad.bfloat16()``),
        # fastgd keeps the parameter's dtype: with that cast made a no-op, torch runs its
        # algorithm in float64 and the two agree to rounding (tests/test_muon.py compares
        # with torch's bfloat16 run, to its precision)
        monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self)
    kw = _kwargs(kwargs)
    if kw.get("differentiable"):
        prob = Problem(name)
        params = prob.arrays()
        with pytest.raises(ValueError, match="differentiable=True"):
            cls(params, **kw)
        return
    if name == "LBFGS":
        opt, topt, ours, theirs, closure, tclosure = _lbfgs_pair(kw)
        for t in range(3):
            f = opt.step(closure)
            tf = topt.step(tclosure)
            assert f == pytest.approx(tf.item(), rel=1e-8, abs=1e-10)
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-8, atol=1e-10,
                                           err_msg=f"step {t}")
        return
    prob = Problem(name)
    ours, theirs = prob.arrays(), prob.tensors()
    opt = cls(ours, **kw)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    # a float32 Tensor lr: torch computes some scalars with it in float32
    rtol = 1e-6 if any(torch.is_tensor(v) and v.dtype == torch.float32
                       for v in kwargs.values()) else 1e-10
    for t in range(STEPS):
        gs, tgs = prob.grads()
        if t == 3 and name != "SparseAdam":
            gs[0], tgs[0] = None, None
        for tp, tg in zip(theirs, tgs):
            tp.grad = tg
        opt.step(gs)
        topt.step()
        _compare(name, opt, topt, ours, theirs, f"step {t}", rtol)


def _fresh(name, kw, seed=0):
    prob = Problem(name, seed)
    params = prob.arrays()
    return prob, params, BY_TORCH[name].cls(params, **kw)


GENERIC = [c for c in CONFIGS if c.values[0] != "LBFGS" and not c.values[1].get(
    "differentiable")]


@pytest.mark.parametrize(("name", "kwargs"), GENERIC)
def test_all_none_gradients_change_nothing(name, kwargs):
    prob, params, opt = _fresh(name, _kwargs(kwargs))
    opt.step(prob.grads()[0])
    before = snapshot(params, opt)
    opt.step([None] * len(params))
    assert_unchanged(before, params, opt)


@pytest.mark.parametrize(("name", "kwargs"), GENERIC)
def test_state_dict_round_trip_and_older_state_dict(name, kwargs):
    kw = _kwargs(kwargs)
    prob, params, opt = _fresh(name, kw)
    steps = [prob.grads()[0] for _ in range(5)]
    for g in steps[:3]:
        opt.step(g)
    sd = opt.state_dict()
    # test_can_load_older_state_dict: groups saved before maximize existed
    older = {**sd, "param_groups": [{k: v for k, v in g.items() if k != "maximize"}
                                    for g in sd["param_groups"]]}
    for saved in (sd, older):
        copies = [p.copy() for p in params]
        other = type(opt)(copies, **{**kw, "maximize": False} if saved is older else kw)
        other.load_state_dict(saved)
        if saved is older:
            assert other.param_groups[0]["maximize"] is False
            continue
        for g in steps[3:]:
            other.step(g)
        for g in steps[3:]:
            opt.step(g)
        for a, b in zip(params, copies):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("name", "kwargs"), GENERIC)
def test_add_param_group_takes_the_configs_hyperparameters(name, kwargs, torch64):
    kw = _kwargs(kwargs)
    prob = Problem(name)
    first, second = prob.arrays(), Problem(name, seed=5).arrays()
    opt = BY_TORCH[name].cls(first, **kw)
    topt = getattr(torch.optim, name)([torch.tensor(a.copy()) for a in first], **kwargs)
    opt.add_param_group({"params": second})
    topt.add_param_group({"params": [torch.tensor(a.copy()) for a in second]})
    for ours, theirs in zip(opt.param_groups, topt.param_groups):
        for key in opt.defaults:
            if key in theirs:
                v = _plain(theirs[key])
                assert _same(ours[key], v), (key, ours[key], v)


def _same(a, b):
    if isinstance(a, tuple) or isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b
