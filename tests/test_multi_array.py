"""Separate arrays updated by one multi-array launch: the per-array results, bit for bit."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

import fastgd
from fastgd import _backend
from tests.conftest import CASES, DTYPES, RULES

SHAPES = [(40_000,), (3, 5), (), (0,), (70_000,), (17,), (2, 2, 2)]


def _per_array(monkeypatch):
    """Turn the multi-array paths off (every segment its own launch)."""
    from fastgd.optim.base import Optimizer

    monkeypatch.setattr(Optimizer, "_update_together",
                        lambda self, plan, *a, **k: plan)
    monkeypatch.setattr(Optimizer, "_step_separate", lambda self, *a: None)


def _general_only(monkeypatch):
    """Turn the separate-arrays step off: lists go through the general step's grouping."""
    from fastgd.optim.base import Optimizer

    monkeypatch.setattr(Optimizer, "_step_separate", lambda self, *a: None)


@pytest.mark.parametrize("path", ["separate", "general"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_a_list_steps_exactly_as_one_launch_per_array(name, case, dtype, path, monkeypatch,
                                                      rng):
    cls, _, options = RULES[name]
    if not cls.elementwise:
        pytest.skip(f"{name} updates each parameter whole")
    hp = options[case]
    # a weight average fused into the update kernels (SWA: every second step)
    average = fastgd.EMA(0.7) if dtype == np.float32 else fastgd.SWA(start=0, every=2)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    steps = []
    for t in range(5):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        if t == 2:  # a parameter whose step count falls behind: its own group (the first:
            grads[0] = None  # it still holds the state the last separate step gave all)
        steps.append(grads)
    a = [x.copy() for x in init]
    opt_a = cls(a, **hp, average=average)
    launches = []
    real = _backend._launch_multi
    monkeypatch.setattr(_backend, "_launch_multi",
                        lambda *args: (launches.append(args[1]), real(*args)))
    from fastgd.optim.base import Optimizer

    separate = []
    real_separate = Optimizer._step_separate
    monkeypatch.setattr(Optimizer, "_step_separate",
                        lambda self, *args: separate.append(real_separate(self, *args))
                        or separate[-1])
    if path == "general":
        _general_only(monkeypatch)
    for grads in steps:
        opt_a.step(grads)
    assert launches  # a multi-array path ran
    assert any(separate) == (path == "separate")
    monkeypatch.undo()
    b = [x.copy() for x in init]
    opt_b = cls(b, **hp, average=average)
    _per_array(monkeypatch)
    for grads in steps:
        opt_b.step(grads)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    if average is not None:
        for x, y in zip(opt_a.averaged(), opt_b.averaged()):
            np.testing.assert_array_equal(x, y)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for i in sb["state"]:
        for k, v in sb["state"][i].items():
            np.testing.assert_array_equal(sa["state"][i][k], v, err_msg=f"{i} {k}")


def test_one_launch_for_a_list_of_arrays(monkeypatch, rng):
    params = [rng.standard_normal(64) for _ in range(50)]
    opt = fastgd.Adam(params, lr=0.1)
    calls = []
    real = _backend.launch
    monkeypatch.setattr(_backend, "launch", lambda *a: (calls.append(a[1]), real(*a)))
    grads = [rng.standard_normal(64) for _ in range(50)]
    opt.step(grads)
    opt.step(grads)
    assert calls == ["adam", "adam"]  # one launch per step for the 50 arrays


def test_the_address_tables_follow_new_gradient_arrays(rng):
    params = [np.zeros(8), np.zeros(3)]
    opt = fastgd.SGD(params, lr=1.0)
    for k in range(3):  # new gradient arrays each step, and the same ones again
        grads = [np.full(8, 1.0 + k), np.full(3, 2.0 + k)]
        for _ in range(3):
            opt.step(grads)
    np.testing.assert_array_equal(params[0], -3 * (1 + 2 + 3) * np.ones(8))
    np.testing.assert_array_equal(params[1], -3 * (2 + 3 + 4) * np.ones(3))
    grads[1] = np.full(3, 10.0)  # one array of the same list replaced
    opt.step(grads)
    np.testing.assert_array_equal(params[1], -3 * (2 + 3 + 4) * np.ones(3) - 10.0)
    np.testing.assert_array_equal(params[0], -3 * (1 + 2 + 3) * np.ones(8) - 3.0)


def test_threads_get_equal_shares_of_the_elements():
    # 200 short arrays then one long one: an even split of the items would leave the
    # long array's chunks all to the last thread
    sizes = [100] * 200 + [200_000]
    layout = _backend.MultiLayout(sizes)
    for threads in (1, 2, 3, 8):
        bounds = layout.bounds(threads)
        assert bounds[0] == 0 and bounds[-1] == layout.item_of.size
        assert np.all(np.diff(bounds) >= 0) and bounds.size == threads + 1
        work = [int(layout.chunk_sizes[a:b].sum()) for a, b in itertools.pairwise(bounds)]
        assert sum(work) == layout.total
        assert max(work) - min(work) <= 2 * _backend.MULTI_CHUNK, (threads, work)


def test_warmup_compiles_the_multi_array_drivers(monkeypatch):
    monkeypatch.setattr(_backend, "_multi_drivers", {})
    reads = []
    real = _backend.ShapeRecord.match
    monkeypatch.setattr(_backend.ShapeRecord, "match",
                        lambda self, ids: reads.append(real(self, ids)) or reads[-1])
    params = [np.zeros(5, np.float32) for _ in range(3)]
    fastgd.Adagrad(params, lr=0.1).warmup(norm_type=None)  # one step a mode
    assert len(reads) == 1 and reads[0] is not None  # the header read of later gradients
    fastgd.Adagrad(params, lr=0.1).warmup()
    built = {(k[1], k[-1]) for k in _backend._multi_drivers}
    # the update and the clipped step's norm, serial and parallel
    assert built == {("adagrad", False), ("adagrad", True), ("sumsq", False), ("sumsq", True)}
    assert not params[0].any()


def test_the_drivers_are_loaded_from_the_disk_cache_by_the_next_process(tmp_path):
    import subprocess
    import sys

    script = (
        "import numpy as np, fastgd\n"
        "from fastgd import _backend\n"
        "p = [np.zeros(5), np.zeros(7)]\n"
        "fastgd.RMSprop(p, lr=0.1).step([np.ones(5), np.ones(7)])\n"
        "((d, _, _),) = _backend._multi_drivers.values()\n"
        "print(sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values()))\n"
    )
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == ["0", "1"]  # compiled and written
    assert runs[1] == ["1", "0"]  # loaded, not compiled


def test_the_drivers_go_to_a_writable_folder(tmp_path, monkeypatch):
    from fastgd.kernels.cpu import multi
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "given"))
    assert multi._folder() == str(tmp_path / "given" / "fastgd-multi")
    # an installation the user cannot write to: the next folder in Numba's order
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "ro"))
    monkeypatch.setattr(multi, "_writable",
                        lambda p, real=multi._writable: not p.startswith(str(tmp_path / "ro"))
                        and real(p))
    assert not multi._folder().startswith(str(tmp_path / "ro"))


@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("steps", [2, 4])
def test_gradients_passed_again_are_checked_again(steps, record, rng, monkeypatch):
    # the same gradient objects as the step before pass a shorter check (after the first
    # step, one compiled read of their headers): a shape or dtype changed in place since,
    # a None or a strided view in their place, is still refused with the error of the
    # full check, and the refused step changes nothing
    if not record:  # no header reads (another Python): the Python check every time
        monkeypatch.setattr(_backend, "_HEADER_FIELDS", None)
    reads = []
    real = _backend.ShapeRecord.match

    def counted(self, ids):
        out = real(self, ids)
        reads.append(out is not None)
        return out

    monkeypatch.setattr(_backend.ShapeRecord, "match", counted)
    params = [rng.standard_normal(4), rng.standard_normal(6)]
    grads = [rng.standard_normal(4), rng.standard_normal(6)]
    opt = fastgd.SGD(params, lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.step(grads)
    # the header read served every step after the first, where it can
    assert reads == [True] * (steps - 1 if record else 0)
    assert isinstance(opt._multi_cache["shapes"][5], _backend.ShapeRecord) == record
    del reads[:]
    before = [p.copy() for p in params]
    state = copy.deepcopy(opt.state_dict())

    def unchanged():
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p, b)
        after = opt.state_dict()
        assert after["param_groups"] == state["param_groups"]
        for i, s in state["state"].items():
            for k, v in s.items():
                np.testing.assert_array_equal(after["state"][i][k], v)

    grads[1].shape = (2, 3)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(2, 3\), params\[1\] has "
                                         r"shape \(6,\)"):
        opt.step(grads)
    unchanged()
    grads[1].shape = (6,)
    grads[0].dtype = np.float32  # 4 float64 read as 8 float32
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(8,\)"):
        opt.step(grads)
    unchanged()
    grads[0].dtype = np.float64
    for _ in range(3):  # the same arrays, again past the header read where there is one
        assert opt._dense_grads(list(grads)) is not None
    grads[1].dtype = np.int64  # same size, another dtype
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype int64, params\[1\] has "
                                        r"dtype float64"):
        opt.step(grads)
    unchanged()
    assert (False in reads) == record  # the header read saw each change
    grads[1].dtype = np.float64
    strided = [grads[0], np.ones(12)[::2]]  # a new list: a view with strides, copied
    opt.step(strided)
    np.testing.assert_array_equal(
        params[1], before[1] - 0.1 * (0.9 * state["state"][1]["momentum_buffer"] + 1.0))


def test_new_gradient_arrays_pass_the_header_read(rng, monkeypatch):
    # a pipeline's fresh gradient arrays each step: checked by the header read, their
    # addresses from it; whatever it refuses goes through the full check as before
    reads = []
    real = _backend.ShapeRecord.match

    def counted(self, ids):
        out = real(self, ids)
        if self is opt._multi_cache["shapes"][5]:  # (not the reference optimizer's)
            reads.append(out is not None)
        return out

    monkeypatch.setattr(_backend.ShapeRecord, "match", counted)
    shapes = [(4,), (2, 3), (), (5,)]
    params = [rng.standard_normal(s) for s in shapes]
    ref = [p.copy() for p in params]
    opt = fastgd.Adam(params, lr=0.1)
    opt_ref = fastgd.Adam(ref, lr=0.1)
    f8 = np.dtype("f8", metadata={"k": 1})  # equal to float64, another dtype object
    sub = type("Sub", (np.ndarray,), {})
    for t in range(7):
        grads = [rng.standard_normal(s) for s in shapes]
        given = list(grads)
        if t == 3:
            given[1] = np.asarray(grads[1], f8)  # refused by the read, accepted by the check
        if t == 4:
            given[3] = np.repeat(grads[3], 2)[::2]  # strided: copied by the full check
        opt.step(given)
        _per_array(monkeypatch)
        opt_ref.step(grads)
        monkeypatch.undo()
        monkeypatch.setattr(_backend.ShapeRecord, "match", counted)
    # the first list built the record; t == 3 failed the read, passed the full check
    # and left its record, which t == 4 (strided: copied by the full check's loop) and
    # t == 5 failed; t == 5 passed the full check and left the record t == 6 passed
    assert reads == [True, True, False, False, False, True]
    for p, q in zip(params, ref):
        np.testing.assert_array_equal(p, q)
    before = [p.copy() for p in params]
    for bad, err in [(grads[0].view(sub), TypeError), (grads[0][:3], ValueError),
                     (grads[0].astype(np.float32), TypeError)]:
        with pytest.raises(err, match=r"grads\[0\]"):
            opt.step([bad, *grads[1:]])
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p, b)


def test_a_shape_record_sees_in_place_changes():
    base = np.arange(24.0)
    arrays = [base.reshape(4, 6), base[:5], np.array(1.5), np.ones(3, np.float32),
              np.empty(0), np.ones(3, ">f8")]
    record = _backend.shape_record(arrays)

    def match(items):
        return record.match(_backend.ids_of(items))

    assert match(arrays).tolist() == [a.__array_interface__["data"][0] for a in arrays]
    others = [np.ones((4, 6)), np.ones(5), np.array(0.0), np.zeros(3, np.float32),
              np.empty(0), np.ones(3, arrays[5].dtype)]
    assert match(others) is not None  # other arrays of the same shapes and dtypes
    arrays[0].shape = (6, 4)
    assert match(arrays) is None
    arrays[0].shape = (4, 6)
    assert match(arrays) is not None
    arrays[3].dtype = np.int32
    assert match(arrays) is None
    arrays[3].dtype = np.float32
    assert match(arrays) is not None
    swapped = arrays[5].dtype
    arrays[5].dtype = np.dtype("<f8")  # equal size, another byte order: another dtype
    assert match(arrays) is None
    arrays[5].dtype = swapped
    for k, other in [(1, np.arange(10.0)[::2]),  # strided
                     (1, np.ones(5).view(type("Sub", (np.ndarray,), {}))),  # a subclass
                     (2, 1.5), (4, None), (3, [1.0, 2.0, 3.0]),  # not arrays
                     (1, np.ones(5, dtype=np.dtype("f8", metadata={"k": 1})))]:  # equal dtype
        assert match([*arrays[:k], other, *arrays[k + 1:]]) is None, (k, other)
    assert match(arrays[:5]) is None
    assert match(arrays) is not None
    assert _backend.shape_record([np.ones(2), [1.0, 2.0]]) is None  # NumPy arrays only


def test_the_header_fields_are_read_only_where_they_check_out():
    import sys

    if sys.implementation.name == "cpython" and _backend._DATA_FIELD is not None:
        d = _backend._DATA_FIELD
        assert _backend._HEADER_FIELDS.tolist() == [d - 8, d, d + 8, d + 16, d + 40, d + 48,
                                                    id(np.ndarray)]
    for wrong in (8, 24, 32):  # other fields taken for the data pointer: refused
        assert _backend._header_fields(wrong) is None


def test_resolved_gradients_are_the_callers_own_list(rng):
    params = [rng.standard_normal(4), rng.standard_normal(3)]
    grads = [rng.standard_normal(4), rng.standard_normal(3)]
    ref = [p.copy() for p in params]
    opt, opt_ref = fastgd.SGD(params, lr=0.1), fastgd.SGD(ref, lr=0.1)
    for _ in range(3):
        opt.step(grads)
        opt_ref.step([g.copy() for g in grads])
    resolved = opt.resolve_grads(grads)
    resolved[0] = np.arange(8.0)[::2]  # the caller's list: a strided view in it
    opt.step(resolved)  # copied like any strided gradient
    opt.step(grads)
    opt_ref.step([np.arange(8.0)[::2].copy(), grads[1].copy()])
    opt_ref.step([g.copy() for g in grads])
    for p, q in zip(params, ref):
        np.testing.assert_array_equal(p, q)


def test_span_memo_finds_the_span_again_only_for_the_same_arrays():
    buf = np.arange(10.0)
    views = [buf[0:3], buf[3:7], buf[7:10]]
    memo = _backend.SpanMemo()
    first = memo("k", views)
    np.testing.assert_array_equal(first, buf)
    assert np.shares_memory(first, buf)
    assert memo("k", list(views)) is first  # the same objects in a new list: remembered
    views[1] = np.arange(3.0, 7.0)  # another object (not in the buffer) in its place
    assert memo("k", views) is None
    assert memo("other", [buf[0:3], buf[3:10]]) is not None  # per key
    gap = [buf[0:3], buf[4:7]]  # the same base, not back to back
    assert memo("k", gap) is None and _backend.span(gap) is None
    for k in range(_backend.SpanMemo.LIMIT + 1):  # bounded: forgets everything at the limit
        memo(k, [buf[0:2]])
    assert len(memo._last) <= _backend.SpanMemo.LIMIT
    # a caller's list is copied: edited in place after, it is looked at again
    mine = [buf[0:3], buf[3:10]]
    whole = memo("c", mine)
    mine[1] = np.arange(7.0)
    assert memo("c", mine) is None
    # a list the caller never changes (kept=True) is kept itself: the same object again is
    # known by one identity test, another list by its arrays
    kept = [buf[0:3], buf[3:10]]
    whole = memo("kept", kept, kept=True)
    assert memo._last["kept"][0] is kept
    assert memo("kept", kept) is whole and memo("kept", list(kept)) is whole


@pytest.mark.parametrize("path", ["separate", "general"])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_views_of_one_buffer_follow_the_gradients_given(name, path, monkeypatch, rng):
    # parameters and gradients made by np.split of one buffer each: one segment, its
    # gradients one span, found again while the same views come back; other objects in
    # their place (separate arrays, the same list edited in place, views of another
    # buffer) are read where they are, with the results of separate parameter arrays
    if path == "general":
        _general_only(monkeypatch)
    sizes = [5, 40_000, 3, 17]
    cuts = np.cumsum(sizes)[:-1]
    pbuf = rng.standard_normal(sum(sizes))
    params = np.split(pbuf, cuts)
    ref = [p.copy() for p in params]
    kw = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    opt = getattr(fastgd, name)(params, **kw)
    ref_opt = getattr(fastgd, name)(ref, **kw)
    gbuf = rng.standard_normal(sum(sizes))
    views = np.split(gbuf, cuts)
    other = np.split(rng.standard_normal(sum(sizes)), cuts)
    edited = list(views)
    for step in range(8):
        gbuf[...] = rng.standard_normal(gbuf.size)  # new values in the same views
        if step == 3:
            edited[2] = rng.standard_normal(sizes[2])  # one view replaced in place
        given = {0: views, 1: views, 2: [v.copy() for v in views], 3: edited,
                 4: views, 5: other, 6: views, 7: edited}[step]
        opt.step(given)
        ref_opt.step([g.copy() for g in given])
        for p, r in zip(params, ref):
            np.testing.assert_array_equal(p, r)
    assert len(opt._segments[0]) == 1  # the views were one segment throughout


def test_addresses_are_read_as_numpy_reports_them():
    base = np.arange(24.0)
    arrays = [base, base[5:], base.reshape(4, 6)[1:], base.reshape(4, 6).T, base[::3],
              np.float32(1.0) * np.ones((2, 3), np.float32), np.empty(0), np.array(3.0),
              np.frombuffer(b"\0" * 16)]  # read-only
    want = [a.__array_interface__["data"][0] for a in arrays]
    assert [_backend.address(a) for a in arrays] == want
    assert _backend.addresses_of(arrays).tolist() == want
    assert _backend.addresses_of([]).size == 0


def test_the_data_pointer_is_read_only_where_it_checks_out(monkeypatch):
    import sys

    base = np.arange(6.0)
    if sys.implementation.name == "cpython":
        assert _backend._DATA_FIELD == object.__basicsize__
    assert _backend._data_field(8) is None  # the type pointer, not the data: refused
    monkeypatch.setattr(_backend, "_DATA_FIELD", None)  # the portable reads
    assert _backend.address(base[2:]) == base.__array_interface__["data"][0] + 16
    assert _backend.addresses_of([base, base[1:]]).tolist() == [
        base.__array_interface__["data"][0] + k for k in (0, 8)]


@pytest.mark.parametrize(("step_kw", "policy"), [
    ({"clip_norm": 1.0}, "propagate"), ({"clip_norm": 0.5, "norm_type": "inf"}, "propagate"),
    ({"clip_norm": 2.0, "norm_type": 3.0}, "skip"), ({}, "skip"), ({}, "raise"),
    ({"clip_norm": 1.0, "grad_scale": 0.5}, "raise")])
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_a_list_with_clipping_or_a_nonfinite_policy_takes_the_separate_step(
        name, step_kw, policy, monkeypatch, rng):
    # the norm or the finiteness check over the list (one reduction per dtype), then the
    # multi-array launch: the results of one launch per array, bit for bit, and a skipped
    # or refused step changes nothing
    from fastgd.optim.base import Optimizer

    shapes = [(40_000,), (3, 5), (), (0,), (17,)]
    dtypes = [np.float32, np.float64, np.float32, np.float32, np.float64]
    init = [np.asarray(rng.standard_normal(s), dtype=d) for s, d in zip(shapes, dtypes)]
    steps = [[np.asarray(rng.standard_normal(s) * 3, dtype=d) for s, d in zip(shapes, dtypes)]
             for _ in range(5)]
    steps[2][4][3] = np.nan
    kw = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}

    def run(per_array):
        params = [x.copy() for x in init]
        opt = getattr(fastgd, name)(params, **kw, nonfinite=policy)
        separate = []
        if per_array:
            _per_array(monkeypatch)
        else:
            real = Optimizer._step_separate
            monkeypatch.setattr(Optimizer, "_step_separate", lambda self, *a: separate.append(
                real(self, *a)) or separate[-1])
        outcomes, norms = [], []
        for grads in steps:
            try:
                outcomes.append(opt.step(grads, **step_kw))
            except fastgd.NonFiniteGradientError:
                outcomes.append("raised")
            norms.append(opt.last_grad_norm)
        monkeypatch.undo()
        return params, opt, outcomes, norms, separate

    a, opt_a, out_a, norms_a, separate = run(False)
    b, opt_b, out_b, norms_b, _ = run(True)
    assert separate and None not in separate  # every step took the separate path
    want = {"propagate": True, "skip": False, "raise": "raised"}[policy]
    assert out_a == out_b == [True, True, want, True, True]
    assert (opt_a.steps_applied, opt_a.steps_skipped) == (opt_b.steps_applied,
                                                          opt_b.steps_skipped)
    np.testing.assert_array_equal(np.array(norms_a, dtype=float), np.array(norms_b, dtype=float))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for i in sb["state"]:
        for k, v in sb["state"][i].items():
            np.testing.assert_array_equal(sa["state"][i][k], v, err_msg=f"{i} {k}")
