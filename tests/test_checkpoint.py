"""Checkpoints: bit-for-bit resume, atomic writes, and files that must be refused."""

from __future__ import annotations

import io
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


# -- hostile files: every one is a CheckpointError, found before anything is read or changed


def _rewrite(path, edit_meta=None, edit_arrays=None, digest=True):
    """Rewrite a checkpoint with edited metadata / arrays and, unless told, a valid digest."""
    from fastgd import checkpoint as C

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta.pop("digest")
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        edit_meta(meta)
    if digest:
        meta["digest"] = C._digest(meta, arrays)
    with open(path, "wb") as f:
        np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)


def _as_dtype(key, dtype):
    def edit(arrays):
        arrays[key] = arrays[key].astype(dtype)
    return edit


def _meta_dtype(key, dtype):
    def edit(meta):
        meta["arrays"][key]["dtype"] = np.dtype(dtype).str
        if key.startswith("params/"):
            meta["params"][int(key.split("/")[1])]["dtype"] = np.dtype(dtype).name
    return edit


def _npy_file(path, tmp_path):
    np.save(path, np.ones(3))
    (tmp_path / "good.npz.npy").rename(path)


def _huge_member(path):
    """A small archive whose member's header declares 10**12 float64 elements."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10**12,)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", buf.getvalue() + b"\0" * 8)
        z.writestr("params/0.npy", buf.getvalue() + b"\0" * 8)


def _zip_bomb(path):
    """A deflated member that would expand to 4 GB."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("__meta__.npy", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 24)
            for _ in range(16):  # 256 MB of zeros, a few hundred kB on disk
                f.write(chunk)


def _compression_byte(path):
    """Change the compression method in the local header and the central directory."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params/0.npy")
    data[info.header_offset + 8] = 99
    start = 0
    while True:  # the central-directory record of params/0.npy
        k = data.find(b"PK\x01\x02", start)
        if k < 0:
            break
        name_len = int.from_bytes(data[k + 28:k + 30], "little")
        if bytes(data[k + 46:k + 46 + name_len]) == b"params/0.npy":
            data[k + 10] = 99
        start = k + 4
    path.write_bytes(bytes(data))


HOSTILE = [
    (lambda p, t: _npy_file(p, t), "not a .npz archive"),
    (lambda p, t: _compression_byte(p), "truncated or corrupt"),
    (lambda p, t: _huge_member(p), "declares 1000000000000 elements"),
    (lambda p, t: _rewrite(p, edit_arrays=_as_dtype("params/0", np.int64),
                           edit_meta=_meta_dtype("params/0", np.int64)),
     "parameters are float32 or float64"),
    (lambda p, t: _rewrite(p, edit_arrays=_as_dtype("params/1", np.complex64),
                           edit_meta=_meta_dtype("params/1", np.complex64)),
     "parameters are float32 or float64"),
    (lambda p, t: _rewrite(p, edit_arrays=_as_dtype("optimizer/0/exp_avg", np.int64),
                           edit_meta=_meta_dtype("optimizer/0/exp_avg", np.int64)),
     r"arrays\['optimizer/0/exp_avg'\] has dtype"),
    (lambda p, t: _rewrite(p, edit_arrays=_as_dtype("params/0", np.float64)),
     "params/0 holds float64"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m["optimizer"]["state"]["0"].update(
        scalars=[1.0])), "scalars must be numbers"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m["optimizer"]["state"]["0"]["scalars"]
                           .pop("step")), "optimizer state does not fit"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m["optimizer"].update(param_groups=[7])),
     "param_groups must be a list of dicts"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m["optimizer"]["param_groups"][0].update(
        lr="fast")), "optimizer state does not fit"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m["params"][0].update(shape=[5, -4])),
     "params\\[0\\] has shape"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m.update(extra_arrays=["nothere"])),
     "'arrays' must list every array"),
    (lambda p, t: _rewrite(p, edit_arrays=lambda a: a.update(stray=np.ones(2))),
     "unexpected"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m.update(params="all")),
     "'params' must be a list"),
    (lambda p, t: _rewrite(p, edit_meta=lambda m: m["optimizer"].update(state={"x": {}})),
     "must be a parameter index"),
]


@pytest.mark.parametrize(("damage", "match"), HOSTILE)
def test_hostile_files_raise_checkpoint_error_and_change_nothing(tmp_path, damage, match):
    path = _saved(tmp_path)
    damage(path, tmp_path)
    flat, opt = _target()
    before = snapshot(list(flat.params), opt)
    with pytest.raises(fastgd.CheckpointError, match=match):
        fastgd.load(path, params=flat, optimizer=opt)
    assert_unchanged(before, list(flat.params), opt)


def test_a_zip_bomb_is_refused_without_reading_it(tmp_path):
    import time

    path = tmp_path / "bomb.npz"
    _zip_bomb(path)
    assert path.stat().st_size < 2**20
    t0 = time.perf_counter()
    with pytest.raises(fastgd.CheckpointError, match="compressed"):
        fastgd.load(path)
    assert time.perf_counter() - t0 < 1.0


def test_save_refuses_what_it_cannot_load_back(tmp_path):
    flat, opt = _target()
    with pytest.raises(TypeError, match=r"extra\['o'\] has dtype object"):
        fastgd.save(tmp_path / "x.npz", params=flat, extra={"o": np.array([1, None])})
    with pytest.raises(TypeError, match="non-empty strings"):
        fastgd.save(tmp_path / "x.npz", params=flat, extra={"": 1})
    assert os.listdir(tmp_path) == []
    path = tmp_path / "ok.npz"
    fastgd.save(path, params=flat, optimizer=opt,
                extra={"s": np.array(["a", "bc"]), "b": np.array([True]), "i": np.arange(3)})
    extra = fastgd.load(path, params=flat)
    assert extra["s"].tolist() == ["a", "bc"] and extra["i"].dtype == np.int64


def test_save_fsyncs_the_folder_and_clears_orphan_temporaries(tmp_path, monkeypatch):
    import stat

    path = _saved(tmp_path)
    orphan = tmp_path / ".good.npz.fastgd-abc123.tmp"  # as a kill -9 mid-save leaves it
    orphan.write_bytes(b"partial")
    other = tmp_path / ".other.npz.fastgd-abc123.tmp"  # another checkpoint's: kept
    other.write_bytes(b"partial")
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    flat, opt = _target()
    fastgd.save(path, params=flat, optimizer=opt)
    assert synced == [False, True]  # the file, then its folder after the rename
    assert sorted(os.listdir(tmp_path)) == [other.name, "good.npz"]


def test_a_checkpoint_killed_mid_save_keeps_the_last_good_one(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "big.npz"
    code = (
        "import numpy as np, fastgd, sys\n"
        "p = [np.zeros(4_000_000)]\n"
        "fastgd.save(sys.argv[1], params=p, extra={'n': 0})\n"
        "print('ready', flush=True)\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1; p[0][:] = n\n"
        "    fastgd.save(sys.argv[1], params=p, extra={'n': n})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    target = [np.empty(4_000_000)]
    n = fastgd.load(path, params=target)["n"]
    assert np.all(target[0] == n)
    fastgd.save(path, params=target, extra={"n": n})
    assert os.listdir(tmp_path) == ["big.npz"]


def test_version_1_checkpoints_still_load(tmp_path):
    from fastgd import checkpoint as C

    path = _saved(tmp_path)

    def as_v1(meta):
        meta["version"] = 1
        del meta["arrays"]

    _rewrite(path, edit_meta=as_v1)
    flat, opt = _target()
    fastgd.load(path, params=flat, optimizer=opt)
    assert C.VERSION == 2 and opt.steps_applied == 3
