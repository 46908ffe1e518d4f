"""The error table: one clear error per constraint, and nothing changed by a failed call."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastgd
import fastgd.functional as F
from tests.helpers import assert_unchanged, snapshot


class FakeCupyArray:
    """Looks like a CuPy array to fastgd's dispatch (type module ``cupy``)."""

    shape = (3,)
    dtype = np.dtype(np.float32)


FakeCupyArray.__module__ = "cupy._core.core"


def _params():
    return [np.ones((2, 3), np.float32), np.zeros(4, np.float32)]


CONSTRUCTOR_ERRORS = [
    (fastgd.SGD, {"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    (fastgd.SGD, {"lr": math.nan}, ValueError, "Invalid lr value: nan"),
    (fastgd.Adam, {"lr": math.inf}, ValueError, "Invalid lr value: inf"),
    (fastgd.SGD, {"lr": "0.1"}, TypeError, "lr must be a real number"),
    (fastgd.SGD, {"lr": 0.1, "momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    (fastgd.SGD, {"lr": 0.1, "weight_decay": -1}, ValueError, "Invalid weight_decay value"),
    (fastgd.SGD, {"lr": 0.1, "nesterov": True}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (fastgd.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
     ValueError, "Nesterov momentum requires"),
    (fastgd.SGD, {"lr": 0.1, "nesterov": 1}, TypeError, "nesterov must be True or False"),
    (fastgd.Adam, {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    (fastgd.Adam, {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1"),
    (fastgd.AdamW, {"betas": (0.9, math.nan)}, ValueError, r"Invalid betas\[1\] value: nan"),
    (fastgd.Adam, {"betas": (0.9,)}, ValueError, "betas must be a pair"),
    (fastgd.Adam, {"betas": 0.9}, TypeError, "betas must be a pair"),
    (fastgd.Adam, {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    (fastgd.Adam, {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    (fastgd.Adam, {"amsgrad": "yes"}, TypeError, "amsgrad must be True or False"),
    (fastgd.Adam, {"eps_root": -1e-8}, ValueError, "Invalid eps_root value: -1e-08"),
    (fastgd.AdamW, {"eps_root": math.inf}, ValueError, "Invalid eps_root value: inf"),
    (fastgd.Adam, {"eps_mode": "keras"}, ValueError,
     "eps_mode must be one of 'torch', 'hat', got 'keras'"),
    (fastgd.AdamW, {"eps_mode": None}, ValueError, "eps_mode must be one of"),
    (fastgd.Adagrad, {"lr_decay": -1}, ValueError, "Invalid lr_decay value: -1"),
    (fastgd.Adagrad, {"initial_accumulator_value": -1}, ValueError,
     "Invalid initial_accumulator_value value"),
    (fastgd.Adadelta, {"rho": 1.5}, ValueError, "Invalid rho value: 1.5"),
    (fastgd.RMSprop, {"alpha": -0.1}, ValueError, "Invalid alpha value: -0.1"),
    (fastgd.RMSprop, {"momentum": -1}, ValueError, "Invalid momentum value"),
    (fastgd.NAdam, {"momentum_decay": -1}, ValueError, "Invalid momentum_decay value"),
    (fastgd.RAdam, {"betas": (-0.5, 0.9)}, ValueError, "Invalid beta parameter at index 0"),
    (fastgd.Adamax, {"eps": -1}, ValueError, "Invalid epsilon value"),
    (fastgd.Lion, {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1"),
    (fastgd.Lion, {"weight_decay": -1}, ValueError, "Invalid weight_decay value"),
]


@pytest.mark.parametrize(("cls", "kw", "exc", "match"), CONSTRUCTOR_ERRORS)
def test_constructor_errors(cls, kw, exc, match):
    params = _params()
    before = snapshot(params)
    with pytest.raises(exc, match=match):
        cls(params, **kw)
    assert_unchanged(before, params)


def test_bad_params():
    with pytest.raises(TypeError, match="dtype float16"):
        fastgd.Adam([np.ones(3, np.float16)])
    with pytest.raises(TypeError, match="dtype int64"):
        fastgd.Adam([np.ones(3, np.int64)])
    with pytest.raises(TypeError, match=r"params\[0\] must be a NumPy or CuPy array, got list"):
        fastgd.Adam([[1.0, 2.0]])
    ro = np.ones(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        fastgd.Adam([ro])
    with pytest.raises(ValueError, match=r"params\[1\] is not C-contiguous"):
        fastgd.Adam([np.ones(2), np.ones((4, 4))[:, 1]])
    with pytest.raises(ValueError, match="empty parameter list"):
        fastgd.Adam([])
    with pytest.raises(TypeError, match="wrap a single array in a list"):
        fastgd.Adam(np.ones(3))
    p = np.ones(3)
    with pytest.raises(ValueError, match="appear more than once"):
        fastgd.Adam([p, p])
    with pytest.raises(ValueError, match="appear more than once"):
        fastgd.Adam([{"params": [p]}, {"params": [p.reshape(3)]}])
    with pytest.raises(TypeError, match="mixes dicts"):
        fastgd.Adam([{"params": [p]}, np.ones(2)])


def test_object_posing_as_cupy_array_is_refused():
    """A type from a cupy module that is not a cupy.ndarray (or CuPy missing): TypeError."""
    with pytest.raises(TypeError, match="CuPy"):
        fastgd.Adam([FakeCupyArray()])
    p = np.ones(3, np.float32)
    opt = fastgd.Adam([p])
    before = snapshot([p], opt)
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([FakeCupyArray()])
    assert_unchanged(before, [p], opt)


def _stepped_adam():
    params = [np.ones((2, 3), np.float32), np.full(4, 2.0, np.float32),
              np.zeros(0, np.float32)]
    opt = fastgd.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.1}], lr=0.01)
    opt.step([np.ones((2, 3), np.float32), np.ones(4, np.float32), np.ones(0, np.float32)])
    return params, opt


def _good_grads():
    return [np.full((2, 3), 0.5, np.float32), np.full(4, 0.5, np.float32),
            np.zeros(0, np.float32)]


STEP_ERRORS = [
    (lambda g: g[:2], ValueError, "expected 3 gradients"),
    (lambda g: [*g[:2], np.zeros(1, np.float32)], ValueError,
     r"grads\[2\] has shape \(1,\), params\[2\] has shape \(0,\)"),
    (lambda g: [*g[:2], np.zeros(0, np.float64)], TypeError,
     r"grads\[2\] has dtype float64, params\[2\] has dtype float32"),
    (lambda g: [*g[:2], []], TypeError, r"grads\[2\] must be a NumPy or CuPy array, got list"),
    (lambda g: np.zeros(3), TypeError, "grads must be a list"),
    (lambda g: [g[0], np.ones((4, 1), np.float32), g[2]], ValueError,
     r"grads\[1\] has shape \(4, 1\)"),
]


@pytest.mark.parametrize(("make", "exc", "match"), STEP_ERRORS)
def test_step_errors_change_nothing(make, exc, match):
    params, opt = _stepped_adam()
    before = snapshot(params, opt)
    with pytest.raises(exc, match=match):
        opt.step(make(_good_grads()))
    assert_unchanged(before, params, opt)


@pytest.mark.parametrize(("key", "value", "exc", "match"), [
    ("lr", -1.0, ValueError, "Invalid learning rate"),
    ("lr", math.nan, ValueError, "Invalid lr value: nan"),
    ("betas", (0.9, 1.5), ValueError, "Invalid beta parameter at index 1"),
    ("eps", math.inf, ValueError, "Invalid eps value: inf"),
    ("amsgrad", None, TypeError, "amsgrad must be True or False"),
])
def test_invalid_hyperparameter_set_between_steps(key, value, exc, match):
    """The bad value is in the *second* group: the first must not be updated either."""
    params, opt = _stepped_adam()
    opt.param_groups[1][key] = value
    before = snapshot(params)
    with pytest.raises(exc, match=match):
        opt.step(_good_grads())
    assert_unchanged(before, params)


def test_step_without_grads_needs_flat_params():
    p = np.ones(3)
    opt = fastgd.SGD([p], lr=0.1)
    with pytest.raises(ValueError, match="step\\(\\) needs grads"):
        opt.step()
    np.testing.assert_array_equal(p, 1.0)


FUNCTIONAL_ERRORS = [
    (lambda p, g, m, v: F.adam_(p, g, m, v[:2], step=1), ValueError,
     r"exp_avg_sq has shape \(2,\), param has shape \(3,\)"),
    (lambda p, g, m, v: F.adam_(p, g.astype(np.float32), m, v, step=1), TypeError,
     "grad has dtype float32, param has dtype float64"),
    (lambda p, g, m, v: F.adam_(p, g, m, v, step=0), ValueError, "Invalid step value: 0"),
    (lambda p, g, m, v: F.adam_(p, g, m, v, step=1.5), ValueError, "Invalid step value"),
    (lambda p, g, m, v: F.adam_(p, g, m, v, step=1, beta1=1.0), ValueError,
     "Invalid beta parameter at index 0"),
    (lambda p, g, m, v: F.adam_(p, g, m, m, step=1), ValueError, "shares memory"),
    (lambda p, g, m, v: F.adam_(p, g, m, v, step=1, eps_root=-1.0), ValueError,
     "Invalid eps_root value: -1.0"),
    (lambda p, g, m, v: F.adamw_(p, g, m, v, step=1, eps_mode="TF"), ValueError,
     "eps_mode must be one of 'torch', 'hat', got 'TF'"),
    (lambda p, g, m, v: F.adam_(p, g, m, p, step=1), ValueError, "shares memory"),
    (lambda p, g, m, v: F.sgd_(p, g, lr=0.1, momentum=0.9), ValueError,
     "needs a momentum_buffer"),
    (lambda p, g, m, v: F.sgd_(p, g, m, lr=0.1, momentum=0.9), ValueError, "step is required"),
    (lambda p, g, m, v: F.sgd_(p, g, m, lr=0.1), ValueError, "momentum is 0"),
    (lambda p, g, m, v: F.sgd_(p, g, lr=0.1, nesterov=True), ValueError, "Nesterov"),
    (lambda p, g, m, v: F.rmsprop_(p, g, m, momentum=0.5), ValueError,
     "needs a momentum_buffer"),
    (lambda p, g, m, v: F.lion_(p, g, m, lr=-1.0), ValueError, "Invalid learning rate"),
    (lambda p, g, m, v: F.adagrad_(p, g, m, step=1, grad_scale=math.nan), ValueError,
     "Invalid grad_scale value"),
    (lambda p, g, m, v: F.nadam_(p, g, m, v, step=1, mu_product="1"), TypeError,
     "mu_product must be a real number"),
    (lambda p, g, m, v: F.adadelta_(p, g, m, v, rho=-0.1), ValueError, "Invalid rho value"),
    (lambda p, g, m, v: F.adamax_(p, g, m, np.ones(3, np.float32), step=1), TypeError,
     "exp_inf has dtype float32"),
]


@pytest.mark.parametrize(("call", "exc", "match"), FUNCTIONAL_ERRORS)
def test_functional_errors_change_nothing(call, exc, match):
    p, g, m, v = np.ones(3), np.ones(3), np.full(3, 0.5), np.full(3, 0.25)
    before = snapshot([p, m, v])
    with pytest.raises(exc, match=match):
        call(p, g, m, v)
    assert_unchanged(before, [p, m, v])


def test_functional_read_only_state():
    p, g, m, v = np.ones(3), np.ones(3), np.zeros(3), np.zeros(3)
    v.flags.writeable = False
    with pytest.raises(ValueError, match="exp_avg_sq is read-only"):
        F.adam_(p, g, m, v, step=1)
    np.testing.assert_array_equal(p, 1.0)
    np.testing.assert_array_equal(m, 0.0)
