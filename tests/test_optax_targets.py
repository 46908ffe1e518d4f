"""optax's convergence targets (``optax/_src/alias_test.py``, ``test_optimization``), met by
fastgd's optimizers.

optax runs each optimizer of its ``_OPTIMIZERS_UNDER_TEST`` for 10,000 float32 steps from a
fixed start on two targets and requires the final parameters within ``rtol = atol = 3e-2``
of the minimum:

* a parabola, ``sum((p - (1, -1, 1))^2)`` from ``(-1, 10, 1)``;
* the Rosenbrock function ``(1 - x)^2 + 100 (y - x^2)^2`` from ``(0, 0)`` to ``(1, 1)``.

optax is not a dependency (and needs JAX), so its targets are reproduced here with NumPy
gradients: each fastgd optimizer that has an optax counterpart in that list runs with the
learning rate optax's test gives it and optax's defaults for the rest, spelled in fastgd's
(torch's) parameters. Where the two libraries' update rules differ, the rule is fastgd's
and the target is optax's (noted per entry). optax's entries without a fastgd optimizer
(adan, lars, lamb, noisy_sgd, novograd, optimistic_*, sign_sgd, fromage, adabelief, sm3,
yogi, polyak_sgd, adamaxw) are not applicable; its complex64 runs neither (fastgd has no
complex parameters).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastgd

STEPS = 10_000
RTOL = ATOL = 3e-2

#: (optax's name, fastgd class, keyword arguments): optax's learning rate from its test,
#: optax's defaults for the other hyperparameters where fastgd's differ.
CONFIGS = [
    ("sgd", "SGD", {"lr": 1e-3, "momentum": 0.9}),
    # optax: rho 0.9, eps 1e-6 (torch's defaults too)
    ("adadelta", "Adadelta", {"lr": 0.1}),
    # optax's Adafactor (parameter-scaled, clipped) differs from torch's, fastgd's rule
    ("adafactor", "Adafactor", {"lr": 5e-3}),
    # optax: initial accumulator 0.1, eps 1e-7
    ("adagrad", "Adagrad", {"lr": 1.0, "initial_accumulator_value": 0.1, "eps": 1e-7}),
    ("adam", "Adam", {"lr": 0.1}),
    # optax's AdamW decays by 1e-4 (torch's default is 1e-2)
    ("adamw", "AdamW", {"lr": 0.1, "weight_decay": 1e-4}),
    ("adamax", "Adamax", {"lr": 0.1}),
    ("amsgrad", "Adam", {"lr": 0.1, "amsgrad": True}),
    ("lion", "Lion", {"lr": 1e-2, "weight_decay": 1e-4}),
    # optax's NAdam has no momentum decay; fastgd's is torch's (momentum_decay 4e-3)
    ("nadam", "NAdam", {"lr": 1e-2}),
    ("nadamw", "NAdam", {"lr": 1e-2, "weight_decay": 1e-4, "decoupled_weight_decay": True}),
    # optax: decay 0.9, eps 1e-8 (inside the square root there, outside in torch's rule)
    ("rmsprop", "RMSprop", {"lr": 5e-3, "alpha": 0.9, "eps": 1e-8}),
    ("rmsprop momentum", "RMSprop", {"lr": 5e-3, "alpha": 0.9, "eps": 1e-8,
                                     "momentum": 0.9}),
    ("radam", "RAdam", {"lr": 5e-3}),
    ("rprop", "Rprop", {"lr": 0.1}),
]


def _parabola():
    target = np.array([1.0, -1.0, 1.0], np.float32)
    return np.array([-1.0, 10.0, 1.0], np.float32), target, lambda p: 2 * (p - target)


def _rosenbrock():
    def grad(p):
        x, y = p
        return np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)],
                        np.float32)

    return np.zeros(2, np.float32), np.ones(2, np.float32), grad


@pytest.mark.parametrize("target", [_parabola, _rosenbrock], ids=["parabola", "rosenbrock"])
@pytest.mark.parametrize(("optax_name", "cls", "kwargs"), CONFIGS,
                         ids=[c[0] for c in CONFIGS])
def test_optax_convergence_target(optax_name, cls, kwargs, target):
    p, minimum, grad = target()
    start = p.copy()
    g = np.empty_like(p)
    opt = getattr(fastgd, cls)([p], **kwargs)
    for _ in range(STEPS):
        g[...] = grad(p)
        opt.step([g])
    assert p.dtype == np.float32
    assert not np.allclose(p, start)  # it moved
    np.testing.assert_allclose(p, minimum, rtol=RTOL, atol=ATOL,
                               err_msg=f"{cls} {kwargs} ({optax_name}'s target)")
