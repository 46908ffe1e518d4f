"""The table of rules that feeds the parity, error and benchmark tests."""

from __future__ import annotations

import numpy as np
import pytest

import fastgd
from tests import reference as R

# name -> (class, reference rule, option sets). Every option set is exercised with
# float32 and float64 and against torch when torch is installed.
RULES = {
    "SGD": (fastgd.SGD, R.ref_sgd, [
        {"lr": 0.1},
        {"lr": 0.1, "weight_decay": 0.05, "maximize": True},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    ]),
    "Adagrad": (fastgd.Adagrad, R.ref_adagrad, [
        {"lr": 0.1},
        {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1, "initial_accumulator_value": 0.2},
        {"lr": 0.1, "eps": 1e-3, "maximize": True},
    ]),
    "Adadelta": (fastgd.Adadelta, R.ref_adadelta, [
        {},
        {"lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.05, "maximize": True},
    ]),
    "RMSprop": (fastgd.RMSprop, R.ref_rmsprop, [
        {"lr": 0.01},
        {"lr": 0.01, "centered": True},
        {"lr": 0.01, "momentum": 0.9},
        {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1, "alpha": 0.9},
        {"lr": 0.01, "eps": 1e-3, "maximize": True},
    ]),
    "Adam": (fastgd.Adam, R.ref_adam, [
        {"lr": 0.01},
        {"lr": 0.01, "amsgrad": True},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True},
        {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-3, "maximize": True},
        {"lr": 0.01, "eps_root": 1e-3},
        {"lr": 0.01, "eps_mode": "hat", "eps": 1e-2, "amsgrad": True, "weight_decay": 0.1},
    ]),
    "AdamW": (fastgd.AdamW, R.ref_adamw, [
        {"lr": 0.01},
        {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True, "maximize": True},
        {"lr": 0.01, "eps_mode": "hat", "eps_root": 1e-4, "eps": 1e-3},
    ]),
    "Adamax": (fastgd.Adamax, R.ref_adamax, [
        {"lr": 0.01},
        {"lr": 0.01, "betas": (0.7, 0.9), "weight_decay": 0.1, "maximize": True},
    ]),
    "NAdam": (fastgd.NAdam, R.ref_nadam, [
        {"lr": 0.01},
        {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.01},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
    ]),
    "RAdam": (fastgd.RAdam, R.ref_radam, [
        {"lr": 0.01},
        {"lr": 0.01, "weight_decay": 0.1},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        {"lr": 0.01, "betas": (0.9, 0.9)},
    ]),
    "Lion": (fastgd.Lion, R.ref_lion, [
        {"lr": 0.01},
        {"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.1, "maximize": True},
    ]),
}

#: Options fastgd has and torch.optim does not (optax's eps_root, Keras's epsilon-hat).
NOT_IN_TORCH = frozenset({"eps_root", "eps_mode"})

CASES = [
    pytest.param(name, i, id=f"{name}-{i}")
    for name, (_, _, opts) in RULES.items()
    for i in range(len(opts))
]

DTYPES = [np.float32, np.float64]

# Relative tolerances of kernel vs reference after 12 steps (issue 2: float64 1e-12,
# float32 1e-5).
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def tol(dtype):
    """rtol/atol for comparing arrays of ``dtype`` (atol scaled for values near zero)."""
    r = RTOL[np.dtype(dtype).type]
    return {"rtol": r, "atol": r}


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
