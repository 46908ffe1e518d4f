"""The optimizer API: flat buffers, one call per segment, no recompiles, edge cases."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastgd
import fastgd.functional as F
from fastgd import _backend
from fastgd.optim.registry import RULES as REGISTRY
from tests.conftest import CASES, RULES
from tests.helpers import assert_unchanged, snapshot
from tests.reference import ReferenceOptimizer, ref_adam, ref_sgd


@pytest.fixture
def launches(monkeypatch):
    """Record every kernel launch: (rule, kernel, number of elements)."""
    calls = []
    real = _backend.launch

    def spy(module, name, flags, *args):
        calls.append((module, name, args[-1].size))
        real(module, name, flags, *args)

    monkeypatch.setattr(_backend, "launch", spy)
    return calls


def _model_flat(dtype=np.float32, n=300, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 500, size=n)
    return fastgd.FlatParams([(int(s),) for s in sizes], dtype=dtype)


def test_flat_params_step_is_one_kernel_call_per_dtype(launches):
    flat = fastgd.FlatParams([(30, 20), np.ones(20, np.float64), (5,), np.ones(3, np.float64)])
    assert set(flat.buffers) == {np.dtype(np.float32), np.dtype(np.float64)}
    opt = fastgd.Adam(flat, lr=0.1)
    for g in flat.grads:
        g[...] = 1.0
    opt.step()
    assert sorted(launches) == [("adam", "adam", 23), ("adam", "adam", 605)]
    launches.clear()
    opt.step(flat.grads)  # the FlatParams' own gradient views: the same single call
    assert len(launches) == 2


def test_300_flat_params_one_call_and_parity(launches):
    flat = _model_flat()
    ref_params = [p.copy() for p in flat.params]
    opt = fastgd.Adam(flat, lr=0.01)
    ref = ReferenceOptimizer(ref_adam, ref_params, lr=0.01)
    rng = np.random.default_rng(1)
    for _ in range(3):
        for g in flat.grads:
            g[...] = rng.standard_normal(g.shape)
        opt.step()
        ref.step([g.copy() for g in flat.grads])
    assert len(launches) == 3
    for p, r in zip(flat.params, ref_params):
        np.testing.assert_allclose(p, r, rtol=1e-5, atol=1e-6)


def test_partial_grads_split_then_coalesce_again(launches):
    flat = fastgd.FlatParams([(4,), (3,), (5,), (2,)])
    opt = fastgd.SGD(flat, lr=0.1, momentum=0.9)
    for g in flat.grads:
        g[...] = 1.0
    opt.step([flat.grads[0], flat.grads[1], None, flat.grads[3]])
    assert [n for _, _, n in launches] == [7, 2]  # params 0-1 together, param 3 alone
    assert 2 not in opt.state
    launches.clear()
    opt.step()  # steps differ now: param 2 takes its first (undampened) step apart
    assert [n for _, _, n in launches] == [7, 5, 2]
    assert opt.state[0]["step"] == 2 and opt.state[2]["step"] == 1
    launches.clear()
    opt.step([None, None, flat.grads[2], None])  # param 2 catches up
    assert [n for _, _, n in launches] == [5]
    launches.clear()
    opt.step()
    assert [n for _, _, n in launches] == [14]  # equal step counts: one call again


def test_separate_arrays_take_one_multi_array_call(launches):
    params = [np.ones(3), np.ones(4), np.ones(())]
    opt = fastgd.Adam(params, lr=0.1)
    opt.step([np.ones(3), np.ones(4), np.ones(())])
    assert [n for _, _, n in launches] == [8]  # one launch over the three arrays
    launches.clear()
    opt.step([np.ones(3), None, np.ones(())])  # the second falls behind: its own call
    opt.step([np.ones(3), np.ones(4), np.ones(())])
    assert [n for _, _, n in launches] == [4, 4, 4]


def test_views_of_one_buffer_are_coalesced(launches):
    buf = np.zeros(10)
    params = [buf[:4], buf[4:].reshape(2, 3)]
    gbuf = np.ones(10)
    opt = fastgd.SGD(params, lr=0.5)
    opt.step([gbuf[:4], gbuf[4:].reshape(2, 3)])
    assert [n for _, _, n in launches] == [10]
    np.testing.assert_array_equal(buf, -0.5)


def test_empty_arrays_do_not_split_a_buffer_wherever_they_point(launches):
    # An empty array occupies no memory; an array library may give it any address.
    buf, gbuf = np.zeros(10), np.ones(10)
    params = [buf[:4], np.zeros(0), buf[4:], np.zeros((0, 3))]
    grads = [gbuf[:4], np.ones(0), gbuf[4:], np.ones((0, 3))]
    opt = fastgd.Adam(params, lr=0.5)
    opt.step(grads)
    assert [n for _, _, n in launches] == [10]
    np.testing.assert_allclose(buf, -0.5)
    assert opt.state_dict()["state"][1]["exp_avg"].shape == (0,)
    assert fastgd.Adam([np.zeros(0), np.zeros(0)], lr=0.1).step([np.ones(0), np.ones(0)])


def test_changing_hyperparameters_compiles_nothing_new():
    p = np.ones(1000, np.float32)
    opt = fastgd.Adam([p], lr=1e-3)
    opt.step([np.ones(1000, np.float32)])
    before = _signatures()
    opt.param_groups[0]["lr"] = 1  # an int: must not create an int64 specialization
    opt.param_groups[0]["betas"] = (0.5, 0.75)
    opt.param_groups[0]["eps"] = 1e-3
    opt.param_groups[0]["weight_decay"] = 0.1
    opt.step([np.ones(1000, np.float32)])
    assert _signatures() == before


def _signatures():
    return {(key, i): len(d.signatures) for key, entry in _backend._kernel_cache.items()
            for i, d in enumerate(entry.builds) if d is not None}


def test_hyperparameters_are_read_per_group_each_step():
    a, b = np.zeros(2), np.zeros(2)
    opt = fastgd.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    opt.step([np.ones(2), np.ones(2)])
    opt.param_groups[0]["lr"] = 0.5
    opt.step([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(a, -0.6)
    np.testing.assert_allclose(b, -2.0)


def test_add_param_group():
    a, b = np.ones(2), np.ones(3)
    opt = fastgd.SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "lr": 1.0})
    opt.step([np.ones(2), np.ones(3)])
    np.testing.assert_allclose(a, 0.9)
    np.testing.assert_allclose(b, 0.0)
    with pytest.raises(ValueError, match="appear more than once"):
        opt.add_param_group({"params": [a]})
    assert len(opt.param_groups) == 2


def test_nan_and_inf_gradients_propagate_like_torch():
    p = np.ones(4)
    opt = fastgd.Adam([p], lr=0.1, amsgrad=True)
    opt.step([np.array([np.nan, np.inf, -np.inf, 1.0])])
    assert np.isnan(p[0]) and np.isnan(p[1]) and np.isnan(p[2]) and np.isfinite(p[3])
    assert np.isnan(opt.state[0]["max_exp_avg_sq"][0])
    q = np.ones(2)
    fastgd.Adamax([q], lr=0.1).step([np.array([np.nan, 1.0])])
    assert np.isnan(q[0]) and np.isfinite(q[1])
    r = np.ones(3)
    fastgd.Lion([r], lr=0.1).step([np.array([np.nan, 0.0, 1.0])])
    assert np.isnan(r[0]) and r[1] == 1.0 and r[2] == 0.9


def test_size_zero_and_0d_params():
    params = [np.zeros(0, np.float32), np.array(2.0, np.float32), np.zeros((0, 3), np.float32)]
    opt = fastgd.SGD(params, lr=0.5, momentum=0.9)
    opt.step([np.zeros(0, np.float32), np.array(1.0, np.float32), np.zeros((0, 3), np.float32)])
    assert params[1].shape == () and params[1] == 1.5
    assert opt.state[0]["momentum_buffer"].shape == (0,)


def test_non_contiguous_grad_is_copied():
    p = np.zeros(3)
    g = np.arange(6.0)[::2]
    opt = fastgd.SGD([p], lr=1.0)
    opt.step([g])
    np.testing.assert_array_equal(p, -g)
    q = np.zeros(3)
    F.sgd_(q, g, lr=1.0)
    np.testing.assert_array_equal(q, -g)


def test_zero_grad_and_flat_views():
    flat = fastgd.FlatParams([(2, 2), (3,)], dtype=np.float64)
    assert flat.size == 7 and len(flat) == 2
    for g in flat.grads:
        g[...] = 3.0
    fastgd.SGD(flat, lr=0.1).zero_grad()
    assert not flat.grad_buffers[np.dtype(np.float64)].any()
    flat.params[0][...] = 5.0
    assert flat.buffers[np.dtype(np.float64)][:4].tolist() == [5.0] * 4
    packed = fastgd.FlatParams([np.arange(3.0), np.ones((2,), np.float32)])
    np.testing.assert_array_equal(packed.params[0], [0.0, 1.0, 2.0])
    assert packed.params[1].dtype == np.float32
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        fastgd.FlatParams([(2,)], dtype=np.int32)
    with pytest.raises(ValueError, match="negative dimension"):
        fastgd.FlatParams([(2, -1)])
    with pytest.raises(TypeError, match="must be a shape or an array"):
        fastgd.FlatParams(["ab"])


def test_step_count_is_per_parameter():
    a, b = np.ones(2), np.ones(2)
    opt = fastgd.Adam([a, b], lr=0.1)
    opt.step([np.ones(2), None])
    opt.step([np.ones(2), np.ones(2)])
    assert opt.state[0]["step"] == 2.0 and opt.state[1]["step"] == 1.0
    ref_a, ref_b = np.ones(2), np.ones(2)
    ref = ReferenceOptimizer(ref_adam, [ref_a, ref_b], lr=0.1)
    ref.step([np.ones(2), None])
    ref.step([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(a, ref_a, rtol=1e-14)
    np.testing.assert_allclose(b, ref_b, rtol=1e-14)


def test_sgd_momentum_turned_on_later_starts_its_buffer_like_torch():
    p, r = np.ones(3), np.ones(3)
    opt = fastgd.SGD([p], lr=0.1)
    ref = ReferenceOptimizer(ref_sgd, [r], lr=0.1)
    opt.step([np.ones(3)])
    ref.step([np.ones(3)])
    assert opt.state == {}
    opt.param_groups[0]["momentum"] = 0.9
    ref.hp["momentum"] = 0.9
    for _ in range(3):
        opt.step([np.full(3, 2.0)])
        ref.step([np.full(3, 2.0)])
    np.testing.assert_allclose(p, r, rtol=1e-14)


def test_repr_and_exports():
    opt = fastgd.RMSprop([np.ones(2)], lr=0.1)
    assert "RMSprop (" in repr(opt) and "lr: 0.1" in repr(opt)
    for name in fastgd.__all__:
        assert hasattr(fastgd, name)


def test_import_compiles_nothing_and_never_imports_cupy():
    code = (
        "import sys, fastgd, fastgd.functional\n"
        "from fastgd import _backend\n"
        "assert not _backend._kernel_cache, _backend._kernel_cache\n"
        "assert 'cupy' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_optimizer_by_name():
    from fastgd.optim import by_name

    assert by_name("adamw") is fastgd.AdamW and by_name("RMSprop") is fastgd.RMSprop
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'; choose from SGD"):
        by_name("adamx")


def _builds(key):
    entry = _backend._kernel_cache.get(key)
    return None if entry is None else (entry.builds[0] is not None, entry.builds[1] is not None)


@pytest.mark.parametrize(("cls", "options", "key"), [
    (fastgd.Adam, {"lr": 0.1, "amsgrad": True},
     ("adam", "adam", (("amsgrad", True), ("average", False)))),
    (fastgd.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True},
     ("sgd", "sgd_momentum", (("average", False), ("nesterov", True)))),
    (fastgd.RMSprop, {"lr": 0.01, "centered": True},
     ("rmsprop", "rmsprop", (("average", False), ("centered", True), ("use_momentum", False)))),
    (fastgd.Adam, {"lr": 0.1, "average": fastgd.EMA(0.9)},
     ("adam", "adam", (("amsgrad", False), ("average", True)))),
])
def test_warmup_compiles_both_builds_and_changes_nothing(monkeypatch, cls, options, key):
    monkeypatch.setattr(_backend, "_kernel_cache", {})
    flat = fastgd.FlatParams([(40, 3), np.ones(5, np.float64), (7,)])
    rng = np.random.default_rng(0)
    params = [*flat.params, rng.standard_normal(9)]
    for p in params:
        p[...] = rng.standard_normal(p.shape)
    opt = cls([{"params": params[:3]}, {"params": params[3:], "lr": 0.5}],
              nonfinite="skip", **options)
    opt.step([np.ones(p.shape, p.dtype) for p in params])
    before = snapshot(params, opt)
    assert opt.warmup() is opt
    assert_unchanged(before, params, opt)
    assert opt.steps_applied == 1 and opt.last_grad_norm is None
    for k in (key, ("reduce", "sumsq", ()), ("reduce", "nonfinite", ())):
        assert _builds(k) == (True, True), k
    big = [np.zeros(100_000, np.float32)]
    signatures = [len(d.signatures) for d in _backend._kernel_cache[key].builds]
    big_opt = cls(big, **options)
    big_opt.step([np.ones(100_000, np.float32)], clip_norm=1.0)  # the parallel build
    assert [len(d.signatures) for d in _backend._kernel_cache[key].builds] == signatures


def test_warmup_without_clipping_and_for_model_kernels(monkeypatch):
    from fastgd.models.activations import bias_act_

    monkeypatch.setattr(_backend, "_kernel_cache", {})
    fastgd.SGD([np.zeros(3)], lr=0.1).warmup(norm_type=None)
    assert _builds(("sgd", "sgd", (("average", False),))) == (True, True)
    assert _builds(("reduce", "sumsq", ())) is None
    with _backend.all_parallel_kernels():  # kernels without a parallel build stay serial
        bias_act_(np.zeros(3), np.zeros((2, 3)), np.zeros((2, 3)), "relu")
    assert _builds(("nn", "bias_act", (("act", 1),))) == (True, False)


def test_serial_kernels_applies_to_the_calling_thread_only(monkeypatch):
    import threading

    monkeypatch.setattr(_backend, "_kernel_cache", {})
    inside, release = threading.Event(), threading.Event()

    def hold():
        with fastgd.serial_kernels():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        inside.wait(10)
        fastgd.SGD([np.zeros(100_000)], lr=0.1).step([np.ones(100_000)])
        assert _builds(("sgd", "sgd", (("average", False),))) == (False, True)  # parallel here
    finally:
        release.set()
        t.join()
    with fastgd.serial_kernels():
        fastgd.SGD([np.zeros(100_000)], lr=0.1).step([np.ones(100_000)])
    assert _builds(("sgd", "sgd", (("average", False),))) == (True, True)


def _mlp_like_flat():
    flat = fastgd.FlatParams([(4, 3), (3,), (3, 2), (2,)], dtype=np.float64)
    rng = np.random.default_rng(0)
    for p, g in zip(flat.params, flat.grads):
        p[...] = rng.standard_normal(p.shape)
        g[...] = rng.standard_normal(g.shape)
    return flat


def test_flat_groups_give_biases_no_weight_decay_and_step_without_grads(launches):
    flat, ref = _mlp_like_flat(), _mlp_like_flat()
    opt = fastgd.AdamW([{"params": flat.select([0, 2])},
                        {"params": flat.select([1, 3]), "weight_decay": 0.0}],
                       lr=0.1, weight_decay=0.3)
    ref_opt = fastgd.AdamW([{"params": [ref.params[0], ref.params[2]]},
                            {"params": [ref.params[1], ref.params[3]], "weight_decay": 0.0}],
                           lr=0.1, weight_decay=0.3)
    for _ in range(3):
        assert opt.step()  # the selected gradient views, no grads argument
        ref_opt.step([ref.grads[0], ref.grads[2], ref.grads[1], ref.grads[3]])
    for a, b in zip(flat.params, ref.params):
        np.testing.assert_array_equal(a, b)
    launches.clear()
    opt.step()
    # w0, w2 and b1, b3 are not adjacent: one multi-array call per group
    assert [n for _, _, n in launches] == [12 + 6, 3 + 2]
    sd = opt.state_dict()
    assert [g["weight_decay"] for g in sd["param_groups"]] == [0.3, 0.0]
    assert sd["param_groups"][1]["params"] == [2, 3]
    opt.zero_grad()
    assert all(not g.any() for g in flat.grads)


def test_adjacent_selected_arrays_update_in_one_call(launches):
    flat = _mlp_like_flat()
    opt = fastgd.SGD([{"params": flat.select([0, 1])}, {"params": flat.select([3, 2])}],
                     lr=0.1)
    opt.step()
    # w0+b0 adjacent, in order: one span of 12 + 3; b1, w1 listed in reverse: two spans,
    # updated in one multi-array call of 2 + 6
    assert sorted(n for _, _, n in launches) == [2 + 6, 12 + 3]
    only = fastgd.SGD(flat.select([2, 3]), lr=0.1)
    only.zero_grad()
    assert not flat.grads[2].any() and flat.grads[0].any()


@pytest.mark.parametrize(("indices", "exc", "match"), [
    ([0, 4], ValueError, "index 4 is out of range for a FlatParams of 4 arrays"),
    ([1, 1], ValueError, r"indices repeat an array: \[1, 1\]"),
    ((i for i in [2, 2]), ValueError, r"indices repeat an array: \[2, 2\]"),
    ([0, -4], ValueError, "indices repeat an array"),
    ([], ValueError, "at least one index"),
    ([0.0], TypeError, "indices must be integers, got 0.0"),
    ("01", TypeError, "indices must be an iterable of integers"),
])
def test_select_errors(indices, exc, match):
    flat = _mlp_like_flat()
    with pytest.raises(exc, match=match):
        flat.select(indices)


def test_an_array_in_two_groups_is_refused_before_anything_changes():
    flat = _mlp_like_flat()
    before = snapshot(flat.params)
    with pytest.raises(ValueError, match="appear more than once"):
        fastgd.SGD([{"params": flat.select([0, 1])}, {"params": flat.select([1])}], lr=0.1)
    assert_unchanged(before, flat.params)


def test_fit_with_flat_groups():
    from fastgd.models import MLP

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    model = MLP([4, 8, 3], output="multiclass", seed=0, dtype=np.float64)
    flat = model.flat
    biases_before = [b.copy() for b in flat.params[1::2]]
    opt = fastgd.SGD([{"params": flat.select(range(0, len(flat), 2))},
                      {"params": flat.select(range(1, len(flat), 2)), "lr": 0.0}],
                     lr=0.05, weight_decay=1e-3)
    hist = fastgd.fit(model, opt, X, y, epochs=3, batch_size=16, seed=0, progress=False)
    assert hist.steps == 12 and hist["loss"][-1] < hist["loss"][0]
    for b, b0 in zip(flat.params[1::2], biases_before):
        np.testing.assert_array_equal(b, b0)  # lr 0 for the bias group


@pytest.mark.parametrize(("name", "case"), CASES)
def test_warmup_builds_a_working_copy_of_every_optimizer(name, case):
    from fastgd import schedules as S

    cls, _, options = RULES[name]
    params = [np.linspace(-1, 1, 6).reshape(2, 3), np.ones(4, np.float32)]
    opt = cls([{"params": params[:1]}, {"params": params[1:]}], **options[case])
    opt.param_groups[0]["lr"] = S.cosine(options[case].get("lr", 1e-3), 10)
    before = snapshot(params, opt)
    assert opt.warmup() is opt
    assert_unchanged(before, params, opt)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_torch_implementation_switches(name):
    """foreach / fused / differentiable=False / capturable=False are accepted no-ops."""
    cls = REGISTRY[name].cls
    p = np.ones((3, 2))
    for kw in ({"foreach": True}, {"foreach": False}, {"fused": True}, {"fused": None},
               {"differentiable": False, "capturable": False}):
        cls([p.copy()], **kw)
    for kw, exc, match in [
        ({"differentiable": True}, ValueError, "differentiable=True"),
        ({"capturable": True}, ValueError, "capturable=True"),
        ({"fused": True, "foreach": True}, RuntimeError, "cannot be `True` together"),
        ({"foreach": "yes"}, TypeError, "foreach must be None, True or False"),
    ]:
        with pytest.raises(exc, match=match):
            cls([p.copy()], **kw)


def test_is_cupy_answers_host_types_and_reads_other_types_module():
    from fastgd import _backend

    host = [np.zeros(3), np.float64(1.0), np.float32(1.0), 1.0, 1, np.zeros(2).view(np.matrix),
            np.int64(3), [1.0], None]
    assert not any(_backend.is_cupy(a) for a in host)
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})()  # CuPy's array type
    assert _backend.is_cupy(fake)
    assert _backend.xp_of(np.zeros(1)) is np
