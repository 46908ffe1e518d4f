"""Every generic rule on random hyperparameters: the NumPy reference and torch.optim itself.

Hyperparameters are drawn (seeded, so a failure names its draw) from each rule's valid
ranges, options included; parameters include 0-d and size-0 arrays, laid out in a
FlatParams split into two param groups (the second at half the learning rate), in
float32 and float64.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastgd
from tests.conftest import DTYPES, REGISTRY, RULES, tol, torch_kwargs
from tests.reference import ReferenceOptimizer

SHAPES = [(5, 3), (), (0,), (11,), (2, 2, 2)]
SPLIT = 2  # the first group: SHAPES[:2]
STEPS = 10
DRAWS = 4


def _log(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _maybe(rng, value, p=0.5):
    return value if rng.random() < p else 0.0


def _betas(rng):
    return (float(rng.uniform(0.5, 0.99)), float(rng.uniform(0.9, 0.9999)))


def _sgd(rng):
    hp = {"lr": _log(rng, 1e-3, 0.3), "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
          "maximize": bool(rng.random() < 0.3)}
    if rng.random() < 0.7:
        hp["momentum"] = float(rng.uniform(0.1, 0.99))
        if rng.random() < 0.5:
            hp["nesterov"] = True
        else:
            hp["dampening"] = _maybe(rng, float(rng.uniform(0.0, 0.5)))
    return hp


SAMPLERS = {
    "SGD": _sgd,
    "Adagrad": lambda rng: {
        "lr": _log(rng, 1e-3, 0.3), "lr_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "initial_accumulator_value": _maybe(rng, float(rng.uniform(0.0, 1.0))),
        "eps": _log(rng, 1e-12, 1e-6), "maximize": bool(rng.random() < 0.3)},
    "Adadelta": lambda rng: {
        "lr": _log(rng, 0.1, 2.0), "rho": float(rng.uniform(0.5, 0.99)),
        "eps": _log(rng, 1e-8, 1e-4), "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "maximize": bool(rng.random() < 0.3)},
    "RMSprop": lambda rng: {
        "lr": _log(rng, 1e-4, 1e-2), "alpha": float(rng.uniform(0.8, 0.999)),
        "eps": _log(rng, 1e-10, 1e-6), "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "momentum": _maybe(rng, float(rng.uniform(0.1, 0.95))),
        "centered": bool(rng.random() < 0.5), "maximize": bool(rng.random() < 0.3)},
    "Adam": lambda rng: {
        "lr": _log(rng, 1e-4, 0.1), "betas": _betas(rng), "eps": _log(rng, 1e-10, 1e-6),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)), "amsgrad": bool(rng.random() < 0.5),
        "decoupled_weight_decay": bool(rng.random() < 0.3),
        "maximize": bool(rng.random() < 0.3)},
    "AdamW": lambda rng: {
        "lr": _log(rng, 1e-4, 0.1), "betas": _betas(rng), "eps": _log(rng, 1e-10, 1e-6),
        "weight_decay": _log(rng, 1e-4, 0.1), "amsgrad": bool(rng.random() < 0.5),
        "maximize": bool(rng.random() < 0.3)},
    "Adamax": lambda rng: {
        "lr": _log(rng, 1e-4, 0.1), "betas": _betas(rng), "eps": _log(rng, 1e-10, 1e-6),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "maximize": bool(rng.random() < 0.3)},
    "NAdam": lambda rng: {
        "lr": _log(rng, 1e-4, 0.1), "betas": _betas(rng), "eps": _log(rng, 1e-10, 1e-6),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "momentum_decay": _log(rng, 1e-3, 1e-2),
        "decoupled_weight_decay": bool(rng.random() < 0.5),
        "maximize": bool(rng.random() < 0.3)},
    "RAdam": lambda rng: {
        "lr": _log(rng, 1e-4, 0.1), "betas": _betas(rng), "eps": _log(rng, 1e-10, 1e-6),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "decoupled_weight_decay": bool(rng.random() < 0.5),
        "maximize": bool(rng.random() < 0.3)},
    "ASGD": lambda rng: {
        "lr": _log(rng, 1e-3, 0.1), "lambd": _log(rng, 1e-5, 1e-2),
        "alpha": float(rng.uniform(0.5, 1.0)), "t0": float(rng.choice([2.0, 5.0, 1e6])),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "maximize": bool(rng.random() < 0.3)},
    "Rprop": lambda rng: {
        "lr": _log(rng, 1e-3, 0.1),
        "etas": (float(rng.uniform(0.3, 0.7)), float(rng.uniform(1.1, 1.5))),
        "step_sizes": (_log(rng, 1e-7, 1e-5), float(rng.uniform(1.0, 50.0))),
        "maximize": bool(rng.random() < 0.3)},
    "Adafactor": lambda rng: {
        "lr": _log(rng, 1e-3, 0.05), "beta2_decay": float(rng.uniform(-0.9, -0.5)),
        "eps": (None, _log(rng, 1e-4, 1e-2)), "d": float(rng.uniform(1.0, 2.0)),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "maximize": bool(rng.random() < 0.3)},
    "Lion": lambda rng: {
        "lr": _log(rng, 1e-5, 1e-2), "betas": _betas(rng),
        "weight_decay": _maybe(rng, _log(rng, 1e-4, 0.1)),
        "maximize": bool(rng.random() < 0.3)},
}

DRAWN = [pytest.param(name, seed, id=f"{name}-draw{seed}")
         for name in RULES for seed in range(DRAWS)]


def test_every_generic_rule_has_a_sampler():
    assert set(SAMPLERS) == set(RULES)


def _draw(name, seed):
    return SAMPLERS[name](np.random.default_rng([zlib.crc32(name.encode()), seed]))


def _run(name, hp, dtype, seed):
    """(fastgd's params, the reference's), stepped STEPS times over two groups."""
    cls, rule, _ = RULES[name]
    rng = np.random.default_rng(seed + 100)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    flat = fastgd.FlatParams(init)
    lr2 = hp["lr"] * 0.5
    opt = cls([{"params": flat.select(range(SPLIT))},
               {"params": flat.select(range(SPLIT, len(SHAPES))), "lr": lr2}], **hp)
    ref_params = [a.copy() for a in init]
    refs = [ReferenceOptimizer(rule, ref_params[:SPLIT], **hp),
            ReferenceOptimizer(rule, ref_params[SPLIT:], **{**hp, "lr": lr2})]
    grads_seen = []
    for t in range(STEPS):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        if t == 4:
            grads[0] = None
        grads_seen.append(grads)
        for gv, g in zip(flat.grads, grads):
            if g is not None:
                gv[...] = g
        opt.step([None if g is None else gv for gv, g in zip(flat.grads, grads)])
        refs[0].step(grads[:SPLIT])
        refs[1].step(grads[SPLIT:])
    return list(flat.params), ref_params, init, grads_seen


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "seed"), DRAWN)
def test_random_hyperparameters_match_the_reference(name, seed, dtype):
    hp = _draw(name, seed)
    ours, ref, _, _ = _run(name, hp, dtype, seed)
    for i, (a, b) in enumerate(zip(ours, ref)):
        np.testing.assert_allclose(a, b, **tol(dtype), err_msg=f"param {i}, {hp}")


@pytest.fixture
def torch64():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


@pytest.mark.parametrize(("name", "seed"), [d for d in DRAWN if REGISTRY[d.values[0]].torch])
def test_random_hyperparameters_match_torch(name, seed, torch64):
    torch = torch64
    hp = _draw(name, seed)
    tkw = torch_kwargs(name, hp)
    if tkw is None:
        pytest.skip(f"torch.optim.{REGISTRY[name].torch} lacks an option of {hp}")
    ours, _, init, grads_seen = _run(name, hp, np.float64, seed)
    if name == "Adafactor":  # torch divides by a size-0 parameter's element count
        keep = [i for i, s in enumerate(SHAPES) if np.prod(s) != 0]
    else:
        keep = list(range(len(SHAPES)))
    theirs = [torch.tensor(init[i].copy()) for i in keep]
    first = [t for i, t in zip(keep, theirs) if i < SPLIT]
    second = [t for i, t in zip(keep, theirs) if i >= SPLIT]
    topt = getattr(torch.optim, REGISTRY[name].torch)(
        [{"params": first}, {"params": second, "lr": hp["lr"] * 0.5}], **tkw)
    for grads in grads_seen:
        for i, t in zip(keep, theirs):
            t.grad = None if grads[i] is None else torch.tensor(grads[i])
        topt.step()
    for i, t in zip(keep, theirs):
        np.testing.assert_allclose(ours[i], t.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"param {i}, {hp}")
