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

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import fastgd
from fastgd import _backend
from fastgd.flat import FlatParams

__all__ = ["CheckpointError", "load", "save"]

FORMAT = "fastgd-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit what it is loaded into."""


def _param_list(params: Any) -> list[np.ndarray]:
    if params is None:
        return []
    if isinstance(params, FlatParams):
        return list(params.params)
    if isinstance(params, np.ndarray):
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


def save(path: str | os.PathLike[str], *, params: Any = None, optimizer: Any = None,
         schedule: Any = None, extra: Mapping[str, Any] | None = None) -> None:
    """Write a checkpoint atomically.

    Args:
        path: the file to write (any name; ``.npz`` is conventional). An existing file is
            replaced only once the new one is complete.
        params: the parameters (a list of arrays or a FlatParams).
        optimizer: a fastgd optimizer; its :meth:`~fastgd.Optimizer.state_dict` is saved.
        schedule: a stateful schedule with ``state_dict()`` (``ReduceLROnPlateau``,
            ``BoldDriver``). Pure schedules need nothing: they live in the optimizer's
            param groups and are saved with it.
        extra: anything else to keep: arrays, and numbers / strings / lists / dicts.

    Raises:
        TypeError: a value that cannot be stored (checked before writing).
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
                    arrays[f"optimizer/{pid}/{k}"] = _host(v)
                    names.append(k)
            state_meta[str(pid)] = {"scalars": scalars, "arrays": names}
        meta["optimizer"] = {
            "class": type(optimizer).__name__,
            "param_groups": _jsonable(sd["param_groups"], "param_groups"),
            "state": state_meta,
            "steps": _jsonable(sd["steps"], "steps"),
        }
    meta["schedule"] = None
    if schedule is not None:
        meta["schedule"] = {"class": type(schedule).__name__,
                            "state": _jsonable(schedule.state_dict(), "schedule state")}
    plain, array_keys = {}, []
    for k, v in (extra or {}).items():
        if not isinstance(k, str) or "/" in k:
            raise TypeError(f"extra keys must be strings without '/', got {k!r}")
        if isinstance(v, np.ndarray) or _backend.is_cupy(v):
            arrays[f"extra/{k}"] = _host(v)
            array_keys.append(k)
        else:
            plain[k] = _jsonable(v, f"extra[{k!r}]")
    meta["extra"] = plain
    meta["extra_arrays"] = array_keys
    meta["digest"] = _digest(meta, arrays)

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastgd-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e}); "
                              "the file may be truncated or corrupt") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a fastgd checkpoint (no __meta__ entry)")
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except ValueError:
        raise CheckpointError(f"{path}: its metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastgd checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}; "
                              f"this fastgd reads version {VERSION}")
    digest = meta.pop("digest", None)
    if digest != _digest(meta, arrays):
        raise CheckpointError(f"{path}: checksum mismatch; the file was modified or damaged")
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
        The ``extra`` dict (arrays as NumPy arrays, or as the parameters' array type).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, truncated, tampered or mismatched checkpoint; nothing
            changed.
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
        for pid, entry in om["state"].items():
            st: dict[str, Any] = dict(entry["scalars"])
            for name in entry["arrays"]:
                st[name] = arrays[f"optimizer/{pid}/{name}"]
            sd["state"][int(pid)] = st
        try:
            appliers.append(optimizer.prepare_load(sd))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit: {e}") from None
    if schedule is not None:
        sm = meta.get("schedule")
        if sm is None or sm["class"] != type(schedule).__name__:
            raise CheckpointError(f"{path} holds no {type(schedule).__name__} state")
        try:
            appliers.append(schedule.prepare_load(sm["state"]))
        except (TypeError, ValueError) as e:
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
