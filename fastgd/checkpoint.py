"""Checkpoints: parameters, optimizer, schedule and extras in one ``.npz`` file.

``save`` writes atomically (a temporary file in the same folder, then a rename), so a
crash mid-write never corrupts the last good checkpoint. ``load`` reads with
``allow_pickle=False`` and checks everything (format, version, checksum, dtypes, shapes,
the optimizer's class and state, the schedule's state) before it changes anything: a
truncated, tampered, mismatched or foreign file raises :class:`CheckpointError` and leaves
the run as it was.

File layout: arrays ``params/<i>``, ``optimizer/<param index>/<buffer>`` and
``extra/<key>``, plus ``__meta__``, a JSON string with the format version, the backend,
each parameter's dtype and shape, the optimizer's class, param groups (schedules as spec
dicts), scalar state and step counters, the schedule's state, the extra values that are
not arrays, and a SHA-256 digest of all of it.

Example:
    >>> import numpy as np, fastgd, tempfile, os
    >>> w = np.ones(3)
    >>> opt = fastgd.Adam([w], lr=0.1)
    >>> opt.step([np.ones(3)])
    True
    >>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
    >>> fastgd.save(path, params=[w], optimizer=opt, extra={"epoch": 1})
    >>> w2 = np.zeros(3); opt2 = fastgd.Adam([w2], lr=0.1)
    >>> fastgd.load(path, params=[w2], optimizer=opt2)
    {'epoch': 1}
    >>> bool((w2 == w).all())
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import fastgd
from fastgd import _backend
from fastgd.flat import _AttachedViews

__all__ = ["CheckpointError", "load", "save"]

FORMAT = "fastgd-checkpoint"
#: Version 2 lists every array's dtype and shape in the metadata (version 1 files, which
#: did not, are still read).
VERSION = 2
READS = (1, 2)
#: The largest metadata a checkpoint may declare (the JSON of groups, scalars and extras).
MAX_META_BYTES = 64 * 2**20
_FLOATS = ("float32", "float64")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit what it is loaded into."""


def _param_list(params: Any) -> list[np.ndarray]:
    if params is None:
        return []
    if isinstance(params, _AttachedViews):
        return list(params.params)
    if isinstance(params, np.ndarray) or _backend.is_cupy(params):
        raise TypeError("params must be a list of arrays or a FlatParams; wrap a single "
                        "array in a list")
    return list(params)


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON data from state-dict values (tuples become lists, numpy scalars floats)."""
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size <= 64:
        return _jsonable(value.tolist(), where)  # e.g. betas given as an array
    raise TypeError(f"{where} cannot be stored in a checkpoint: {value!r} "
                    f"({type(value).__name__}); use numbers, strings, lists, dicts or arrays")


def _host(a: Any) -> np.ndarray:
    return a.get() if _backend.is_cupy(a) else np.asarray(a)


def _digest(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _storable(a: np.ndarray, where: str) -> np.ndarray:
    """``a`` if it can be written and read back with ``allow_pickle=False``."""
    if a.dtype.hasobject:
        raise TypeError(f"{where} has dtype {a.dtype}, which needs pickling; a checkpoint "
                        "holds arrays of numbers, booleans or strings only")
    return a


def save(path: str | os.PathLike[str], *, params: Any = None, optimizer: Any = None,
         schedule: Any = None, extra: Mapping[str, Any] | None = None) -> None:
    """Write a checkpoint atomically.

    The file is written next to ``path`` under a temporary name, flushed to disk, renamed
    over ``path``, and the folder is flushed too, so a crash at any point leaves either
    the previous checkpoint or the new one. Temporary files that an interrupted save of the
    same ``path`` left behind are removed once this save has succeeded.

    Args:
        path: the file to write (any name; ``.npz`` is conventional). An existing file is
            replaced only once the new one is complete.
        params: the parameters (a list of arrays or a FlatParams).
        optimizer: a fastgd optimizer; its :meth:`~fastgd.Optimizer.state_dict` is saved.
        schedule: a stateful schedule with ``state_dict()`` (``ReduceLROnPlateau``,
            ``BoldDriver``). Pure schedules need nothing: they live in the optimizer's
            param groups and are saved with it.
        extra: anything else to keep: arrays (of numbers, booleans or strings), and
            numbers / strings / lists / dicts.

    Raises:
        TypeError: a value that cannot be stored, or read back without pickling (checked
            before writing).
        OSError: the file cannot be written (the previous checkpoint is kept).
    """
    arrays: dict[str, np.ndarray] = {}
    plist = _param_list(params)
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                            "fastgd": fastgd.__version__, "backend": "numpy", "params": []}
    for i, p in enumerate(plist):
        a = _host(_backend.check_array(p, f"params[{i}]"))
        arrays[f"params/{i}"] = a
        meta["params"].append({"dtype": a.dtype.name, "shape": list(a.shape)})
        if _backend.is_cupy(p):
            meta["backend"] = "cupy"
    meta["optimizer"] = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        state_meta = {}
        for pid, entry in sd["state"].items():
            scalars, names = {}, []
            for k, v in entry.items():
                if isinstance(v, (float, int)) and not isinstance(v, bool):
                    scalars[k] = float(v)
                else:
                    arrays[f"optimizer/{pid}/{k}"] = _storable(
                        _host(v), f"optimizer state [{pid}][{k!r}]")
                    names.append(k)
            state_meta[str(pid)] = {"scalars": scalars, "arrays": names}
        meta["optimizer"] = {
            "class": type(optimizer).__name__,
            "param_groups": _jsonable(sd["param_groups"], "param_groups"),
            "state": state_meta,
            "steps": _jsonable(sd["steps"], "steps"),
        }
        if "average" in sd:  # the weight averaging's spec and count (arrays: in "state")
            meta["optimizer"]["average"] = _jsonable(sd["average"], "average")
    meta["schedule"] = None
    if schedule is not None:
        meta["schedule"] = {"class": type(schedule).__name__,
                            "state": _jsonable(schedule.state_dict(), "schedule state")}
    plain, array_keys = {}, []
    for k, v in (extra or {}).items():
        if not isinstance(k, str) or "/" in k or not k:
            raise TypeError(f"extra keys must be non-empty strings without '/', got {k!r}")
        if isinstance(v, np.ndarray) or _backend.is_cupy(v):
            arrays[f"extra/{k}"] = _storable(_host(v), f"extra[{k!r}]")
            array_keys.append(k)
        else:
            plain[k] = _jsonable(v, f"extra[{k!r}]")
    meta["extra"] = plain
    meta["extra_arrays"] = array_keys
    meta["arrays"] = {k: {"dtype": a.dtype.str, "shape": list(a.shape)}
                      for k, a in arrays.items()}
    meta["digest"] = _digest(meta, arrays)
    blob = np.array(json.dumps(meta))
    if blob.nbytes > MAX_META_BYTES:
        raise TypeError(f"the checkpoint's metadata would take {blob.nbytes} bytes, more "
                        f"than the {MAX_META_BYTES} a checkpoint may hold; store large "
                        "values in extra as arrays")

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}.fastgd-"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=blob, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    for name in os.listdir(folder):  # left by saves of this path that were interrupted
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _fsync_folder(folder: str) -> None:
    """Flush a folder's entries (the rename) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading ----------------------------------------------------------------------------


#: What reading a damaged archive member can raise.
_READ_ERRORS = (ValueError, OSError, EOFError, SyntaxError, TypeError, zipfile.BadZipFile,
                NotImplementedError, KeyError)


def _bad(path: Any, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: {why}")


def _shape(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62 for d in value):
        return None
    return tuple(value)


def _dtype(value: Any, allowed: tuple[str, ...] | None) -> np.dtype | None:
    """The dtype a metadata entry names, if it is one a checkpoint may hold."""
    if not isinstance(value, str):
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        return None
    if dt.hasobject or dt.kind not in "biufcUS" or dt.fields is not None:
        return None
    if allowed is not None and dt.name not in allowed:
        return None
    return dt


def _expected(path: Any, meta: dict[str, Any]) -> dict[str, tuple[np.dtype | None, Any]]:
    """Each array member the metadata promises: name -> (dtype, shape); None where any.

    Checks the metadata's structure on the way (types of every field the loader reads).
    """
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise _bad(path, f"malformed metadata: {what}")

    need(isinstance(meta.get("params"), list), "'params' must be a list")
    out: dict[str, tuple[np.dtype | None, Any]] = {}
    pshape = []
    for i, entry in enumerate(meta["params"]):
        need(isinstance(entry, dict) and set(entry) == {"dtype", "shape"},
             f"params[{i}] must be {{'dtype', 'shape'}}")
        dt, shape = _dtype(entry["dtype"], _FLOATS), _shape(entry["shape"])
        need(dt is not None and dt.name == entry["dtype"],
             f"params[{i}] has dtype {entry['dtype']!r}; parameters are float32 or float64")
        need(shape is not None, f"params[{i}] has shape {entry['shape']!r}")
        out[f"params/{i}"] = (dt, shape)
        pshape.append((dt, shape))
    om = meta.get("optimizer")
    if om is not None:
        need(isinstance(om, dict) and {"class", "param_groups", "state", "steps"} <= set(om),
             "'optimizer' must hold class, param_groups, state and steps")
        need(isinstance(om["class"], str), "optimizer class must be a string")
        need(isinstance(om["param_groups"], list)
             and all(isinstance(g, dict) for g in om["param_groups"]),
             "optimizer param_groups must be a list of dicts")
        need(isinstance(om["steps"], dict), "optimizer steps must be a dict")
        need(isinstance(om["state"], dict), "optimizer state must be a dict")
        need(isinstance(om.get("average", {}), dict), "optimizer average must be a dict")
        for pid, entry in om["state"].items():
            need(isinstance(pid, str) and pid.isdigit(),
                 f"optimizer state key {pid!r} must be a parameter index")
            need(isinstance(entry, dict) and set(entry) == {"scalars", "arrays"},
                 f"optimizer state [{pid}] must be {{'scalars', 'arrays'}}")
            need(isinstance(entry["scalars"], dict) and all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in entry["scalars"].items()),
                f"optimizer state [{pid}] scalars must be numbers")
            need(isinstance(entry["arrays"], list) and all(
                isinstance(k, str) and k and "/" not in k for k in entry["arrays"])
                and len(set(entry["arrays"])) == len(entry["arrays"]),
                f"optimizer state [{pid}] arrays must be a list of names")
            for name in entry["arrays"]:
                key = f"optimizer/{pid}/{name}"
                i = int(pid)
                # version 1 kept every state array at its parameter's shape and dtype
                out[key] = (pshape[i] if i < len(pshape) else (None, None)) \
                    if meta["version"] == 1 else (None, None)
    sm = meta.get("schedule")
    need(sm is None or (isinstance(sm, dict) and set(sm) == {"class", "state"}
                        and isinstance(sm["class"], str)),
         "'schedule' must be None or {'class', 'state'}")
    need(isinstance(meta.get("extra"), dict), "'extra' must be a dict")
    keys = meta.get("extra_arrays")
    need(isinstance(keys, list) and all(isinstance(k, str) and k and "/" not in k
                                        for k in keys) and len(set(keys)) == len(keys),
         "'extra_arrays' must be a list of names")
    need(not set(keys) & set(meta["extra"]), "a key is both an extra value and an array")
    for k in keys:
        out[f"extra/{k}"] = (None, None)
    if meta["version"] >= 2:
        table = meta.get("arrays")
        need(isinstance(table, dict) and set(table) == set(out),
             "'arrays' must list every array of the checkpoint")
        for key, entry in table.items():
            need(isinstance(entry, dict) and set(entry) == {"dtype", "shape"},
                 f"arrays[{key!r}] must be {{'dtype', 'shape'}}")
            floats = None if key.startswith("extra/") else _FLOATS
            dt, shape = _dtype(entry["dtype"], floats), _shape(entry["shape"])
            need(dt is not None and shape is not None,
                 f"arrays[{key!r}] has dtype {entry['dtype']!r} and shape {entry['shape']!r}")
            want = out[key]
            need(want[0] is None or (want[0] == dt and want[1] == shape),
                 f"arrays[{key!r}] disagrees with params")
            out[key] = (dt, shape)
    return out


def _member_header(path: Any, zf: zipfile.ZipFile, info: zipfile.ZipInfo
                   ) -> tuple[np.dtype, tuple[int, ...]]:
    """Read a member's .npy header only; check it declares what the member holds."""
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"npy format version {version}")
            header = f.tell()
    except _READ_ERRORS as e:
        raise _bad(path, f"{info.filename} has no valid array header ({type(e).__name__}: "
                         f"{e}); the file may be truncated or corrupt") from None
    if fortran or dtype.hasobject:
        raise _bad(path, f"{info.filename} is not a C-ordered array of numbers")
    n = 1
    for d in shape:
        n *= d
    if header + n * dtype.itemsize != info.file_size:
        raise _bad(path, f"{info.filename} declares {n} elements of {dtype} but holds "
                         f"{info.file_size - header} bytes of data")
    return dtype, shape


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of a checkpoint, every part checked before it is read.

    The zip structure (uncompressed members inside the file, no duplicates), then the
    metadata (a bounded JSON string of the expected structure), then every member's .npy
    header against the dtype and shape the metadata records, and only then the data;
    finally the digest over all of it. No declared size can make it read or allocate more
    than the file holds.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise _bad(path, f"cannot be opened ({e.strerror or e})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != b"PK\x03\x04":
            raise _bad(path, "not a readable checkpoint (not a .npz archive); the file may "
                             "be truncated or corrupt")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
            raise _bad(path, f"not a readable checkpoint ({type(e).__name__}: {e}); the file "
                             "may be truncated or corrupt") from None
        with zf:
            return _read_members(path, zf, size)


def _read_members(path: Any, zf: zipfile.ZipFile, size: int
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    infos = zf.infolist()
    by_name: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or name[:-4] in by_name:
            raise _bad(path, f"unexpected member {name!r}; the file may be truncated or "
                             "corrupt")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or (
                info.compress_size != info.file_size) or (
                info.header_offset + info.compress_size > size):
            raise _bad(path, f"member {name!r} is compressed, encrypted or extends past the "
                             "end of the file; the file may be truncated or corrupt")
        by_name[name[:-4]] = info
    if "__meta__" not in by_name:
        raise _bad(path, "not a fastgd checkpoint (no __meta__ entry)")
    meta_info = by_name.pop("__meta__")
    dtype, shape = _member_header(path, zf, meta_info)
    if dtype.kind != "U" or shape != () or dtype.itemsize > MAX_META_BYTES:
        raise _bad(path, "not a fastgd checkpoint (its __meta__ entry is not a string of "
                         f"at most {MAX_META_BYTES} bytes)")
    try:
        with zf.open(meta_info) as f:
            text = str(np.lib.format.read_array(f, allow_pickle=False))
        meta = json.loads(text)
    except _READ_ERRORS as e:
        raise _bad(path, f"its metadata is not valid JSON ({type(e).__name__}); the file may "
                         "be truncated or corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _bad(path, "not a fastgd checkpoint")
    if meta.get("version") not in READS:
        raise _bad(path, f"checkpoint format version {meta.get('version')!r}; this fastgd "
                         f"reads versions {', '.join(map(str, READS))}")
    digest = meta.pop("digest", None)
    expected = _expected(path, meta)
    if set(by_name) != set(expected):
        extra, missing = sorted(set(by_name) - set(expected)), sorted(set(expected) - set(by_name))
        raise _bad(path, f"its arrays do not match its metadata (unexpected {extra}, "
                         f"missing {missing})")
    headers = {}
    for key, info in by_name.items():
        dt, shape = _member_header(path, zf, info)
        want_dt, want_shape = expected[key]
        if (want_dt is not None and dt != want_dt) or (
                want_shape is not None and shape != want_shape):
            raise _bad(path, f"{key} holds {dt}{list(shape)}, its metadata says "
                             f"{want_dt}{list(want_shape) if want_shape is not None else ''}")
        headers[key] = (dt, shape)
    arrays = {}
    try:
        for key, info in by_name.items():
            with zf.open(info) as f:
                arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
    except _READ_ERRORS as e:
        raise _bad(path, f"not a readable checkpoint ({type(e).__name__}: {e}); the file may "
                         "be truncated or corrupt") from None
    if digest != _digest(meta, arrays):
        raise _bad(path, "checksum mismatch; the file was modified or damaged")
    return meta, arrays


def load(path: str | os.PathLike[str], *, params: Any = None, optimizer: Any = None,
         schedule: Any = None) -> dict[str, Any]:
    """Restore a checkpoint into existing parameters, optimizer and schedule.

    Everything given is checked against the file before anything is changed.

    Args:
        path: a file written by :func:`save`.
        params: the parameters to overwrite (same count, shapes and dtypes as saved).
        optimizer: an optimizer of the saved class over ``params``-shaped arrays.
        schedule: a stateful schedule of the saved class.

    Returns:
        The ``extra`` dict (its arrays as NumPy arrays).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: anything wrong with the file (not a checkpoint, truncated,
            tampered, compressed, an array that does not match its metadata, sizes the file
            cannot hold) or a checkpoint that does not fit ``params``, ``optimizer`` or
            ``schedule``; nothing changed.
        TypeError, ValueError: ``params`` are not writeable float arrays.
    """
    meta, arrays = _read(path)
    appliers: list[Callable[[], None]] = []
    plist = _param_list(params)
    if params is not None:
        saved = meta["params"]
        if len(saved) != len(plist):
            raise CheckpointError(f"{path} holds {len(saved)} parameters, got {len(plist)}")
        for i, (p, s) in enumerate(zip(plist, saved)):
            _backend.check_array(p, f"params[{i}]", writeable=True)
            if list(p.shape) != s["shape"] or p.dtype.name != s["dtype"]:
                raise CheckpointError(
                    f"params[{i}] is {p.dtype.name}{list(p.shape)}, the checkpoint's is "
                    f"{s['dtype']}{s['shape']}"
                )
        appliers.append(lambda: _copy_params(plist, arrays))
    if optimizer is not None:
        om = meta.get("optimizer")
        if om is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        if om["class"] != type(optimizer).__name__:
            raise CheckpointError(f"{path} holds {om['class']} state, not "
                                  f"{type(optimizer).__name__} state")
        sd = {"param_groups": om["param_groups"], "steps": om["steps"], "state": {}}
        if "average" in om:
            sd["average"] = om["average"]
        for pid, entry in om["state"].items():
            st: dict[str, Any] = dict(entry["scalars"])
            for name in entry["arrays"]:
                st[name] = arrays[f"optimizer/{pid}/{name}"]
            sd["state"][int(pid)] = st
        try:
            appliers.append(optimizer.prepare_load(sd))
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit: {e}") from None
    if schedule is not None:
        sm = meta.get("schedule")
        if sm is None or sm["class"] != type(schedule).__name__:
            raise CheckpointError(f"{path} holds no {type(schedule).__name__} state")
        try:
            appliers.append(schedule.prepare_load(sm["state"]))
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise CheckpointError(f"{path}: schedule state does not fit: {e}") from None
    for apply in appliers:
        apply()
    extra: dict[str, Any] = dict(meta["extra"])
    for k in meta["extra_arrays"]:
        extra[k] = arrays[f"extra/{k}"]
    return extra


def _copy_params(plist: Sequence[Any], arrays: Mapping[str, np.ndarray]) -> None:
    for i, p in enumerate(plist):
        p[...] = _backend.to_module_of(arrays[f"params/{i}"], p)
