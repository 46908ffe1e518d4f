"""Checkpoints: bit-for-bit resume, atomic writes, and files that must be refused."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import fastgd
from fastgd import schedules as S
from tests.helpers import assert_state_equal, assert_unchanged, snapshot


def _run(dtype, steps, flat, opt, rng_seed=0, plateau=None, start=0):
    rng = np.random.default_rng(rng_seed)
    grads = [[np.asarray(rng.standard_normal(p.shape) * 3, dtype=dtype) for p in flat.params]
             for _ in range(start + steps)]
    for t in range(start, start + steps):
        for gv, g in zip(flat.grads, grads[t]):
            gv[...] = g
        opt.step(clip_norm=1.0)
        if plateau is not None:
            plateau.step(float(np.sum(flat.params[0])))


def _make(dtype, lr):
    flat = fastgd.FlatParams([(5, 4), (4,), (), (0,)], dtype=dtype)
    rng = np.random.default_rng(42)
    for p in flat.params:
        p[...] = rng.standard_normal(p.shape)
    return flat, fastgd.AdamW(flat, lr=lr, weight_decay=0.05)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_from_checkpoint_is_bit_for_bit(tmp_path, dtype):
    sched = S.join([S.linear(0.0, 0.01, 3), S.cosine(0.01, 20)], [3])
    flat, opt = _make(dtype, sched)
    _run(dtype, 12, flat, opt)

    flat1, opt1 = _make(dtype, sched)
    _run(dtype, 5, flat1, opt1)
    path = tmp_path / "ckpt.npz"
    fastgd.save(path, params=flat1, optimizer=opt1, extra={"epoch": 5, "note": "x",
                                                            "rng": np.arange(3)})
    flat2, opt2 = _make(dtype, 0.5)
    extra = fastgd.load(path, params=flat2, optimizer=opt2)
    assert extra["epoch"] == 5 and extra["note"] == "x"
    np.testing.assert_array_equal(extra["rng"], np.arange(3))
    assert opt2.param_groups[0]["lr"] == sched
    _run(dtype, 7, flat2, opt2, start=5)
    for a, b in zip(flat.params, flat2.params):
        np.testing.assert_array_equal(a, b)
    assert_state_equal(opt.state_dict(), opt2.state_dict())


def test_stateful_schedule_round_trip(tmp_path):
    flat, opt = _make(np.float64, 0.01)
    plateau = S.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    _run(np.float64, 4, flat, opt, plateau=plateau)
    fastgd.save(tmp_path / "a.npz", params=flat, optimizer=opt, schedule=plateau)
    flat2, opt2 = _make(np.float64, 0.01)
    plateau2 = S.ReduceLROnPlateau(opt2, patience=0, factor=0.5)
    fastgd.load(tmp_path / "a.npz", params=flat2, optimizer=opt2, schedule=plateau2)
    assert plateau2.state_dict() == plateau.state_dict()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def _saved(tmp_path):
    flat, opt = _make(np.float32, 0.01)
    _run(np.float32, 3, flat, opt)
    path = tmp_path / "good.npz"
    fastgd.save(path, params=flat, optimizer=opt, extra={"epoch": 3})
    return path


def _target():
    flat, opt = _make(np.float32, 0.01)
    _run(np.float32, 1, flat, opt, rng_seed=9)
    return flat, opt


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_array_byte(path):
    """Rewrite one array with a changed value, keeping the (now stale) metadata."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["params/0"] = arrays["params/0"].copy()
    arrays["params/0"].flat[3] += 1.0
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _edit_meta(fn):
    def edit(path):
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays["__meta__"]))
        fn(meta)
        arrays["__meta__"] = np.array(json.dumps(meta))
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    return edit


def _corrupt_zip_member(path):
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params/0.npy")
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))


BAD_FILES = [
    (_truncate, "truncated or corrupt"),
    (_corrupt_zip_member, "truncated or corrupt"),
    (_flip_array_byte, "checksum mismatch"),
    (_edit_meta(lambda m: m.update(version=99)), "format version 99"),
    (_edit_meta(lambda m: m.update(format="other")), "not a fastgd checkpoint"),
    (lambda p: p.write_bytes(b"not a zip at all"), "truncated or corrupt"),
]


@pytest.mark.parametrize(("damage", "match"), BAD_FILES)
def test_damaged_checkpoint_raises_and_changes_nothing(tmp_path, damage, match):
    path = _saved(tmp_path)
    damage(path)
    flat, opt = _target()
    before = snapshot(list(flat.params), opt)
    with pytest.raises(fastgd.CheckpointError, match=match):
        fastgd.load(path, params=flat, optimizer=opt)
    assert_unchanged(before, list(flat.params), opt)


def test_mismatched_targets_raise_and_change_nothing(tmp_path):
    path = _saved(tmp_path)
    flat, opt = _target()
    before = snapshot(list(flat.params), opt)
    other = fastgd.FlatParams([(5, 4), (4,), (), (0,)], dtype=np.float64)
    with pytest.raises(fastgd.CheckpointError, match=r"params\[0\] is float64"):
        fastgd.load(path, params=other, optimizer=opt)
    fewer = fastgd.FlatParams([(5, 4), (4,)])
    with pytest.raises(fastgd.CheckpointError, match="holds 4 parameters, got 2"):
        fastgd.load(path, params=fewer, optimizer=opt)
    sgd = fastgd.SGD(flat, lr=0.1, momentum=0.9)
    with pytest.raises(fastgd.CheckpointError, match="holds AdamW state, not SGD state"):
        fastgd.load(path, params=flat, optimizer=sgd)
    small = fastgd.AdamW([np.ones(3, np.float32)])
    with pytest.raises(fastgd.CheckpointError, match="optimizer state does not fit"):
        fastgd.load(path, params=flat, optimizer=small)
    plateau = S.ReduceLROnPlateau(opt)
    with pytest.raises(fastgd.CheckpointError, match="holds no ReduceLROnPlateau state"):
        fastgd.load(path, params=flat, optimizer=opt, schedule=plateau)
    assert_unchanged(before, list(flat.params), opt)
    with pytest.raises(FileNotFoundError):
        fastgd.load(tmp_path / "missing.npz", params=flat)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    good = path.read_bytes()
    flat, opt = _target()

    def crash(f, **arrays):
        f.write(b"partial garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        fastgd.save(path, params=flat, optimizer=opt)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["good.npz"]


def test_save_checks_values_before_writing(tmp_path):
    flat, _ = _target()
    with pytest.raises(TypeError, match=r"extra\['f'\] cannot be stored"):
        fastgd.save(tmp_path / "x.npz", params=flat, extra={"f": object()})
    with pytest.raises(TypeError, match="without '/'"):
        fastgd.save(tmp_path / "x.npz", params=flat, extra={"a/b": 1})
    assert os.listdir(tmp_path) == []
