"""THE dispatch point: an array's type decides which compute layer runs.

NumPy arrays go to the Numba kernels in ``kernels/cpu``; CuPy arrays to the CuPy kernels in
``kernels/cuda``. CuPy arrays are recognized by their type's module, so CuPy is imported
only on first sight of one (and a clear error says so when it is not installed).
Everything that needs to know about array types (validation, allocation, the addresses
used to find adjacent arrays, kernel launches, reductions) asks this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import operator
import os
import sys
import threading
from collections.abc import Iterator
from itertools import repeat
from typing import Any

import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "ShapeRecord",
    "SpanMemo",
    "address",
    "addresses_of",
    "as_float64",
    "check_array",
    "device_of",
    "identity_keys",
    "ids_of",
    "is_cupy",
    "kind",
    "launch",
    "launch_sized",
    "reduce",
    "shape_record",
    "span",
    "to_module_of",
    "xp_of",
]

#: The parameter dtypes every rule supports; state is kept in the parameter's dtype.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

class _Variant:
    """One kernel variant: its parallel threshold and its two builds, compiled on first use.

    ``builds[parallel]`` is the serial (False) or the ``prange`` (True) Numba dispatcher,
    or None until it is first needed.
    """

    __slots__ = ("builds", "threshold")

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.builds: list[Any] = [None, None]


# (module, kernel, flags) -> its _Variant
_kernel_cache: dict[tuple[Any, ...], _Variant] = {}


#: Types that are never CuPy's: answered without reading the type's module (the check
#: runs several times per training step).
_HOST_TYPES = frozenset({np.ndarray, np.float64, np.float32, float, int})


def is_cupy(a: Any) -> bool:
    """Whether ``a`` is a CuPy array (checked without importing CuPy)."""
    t = type(a)
    return t not in _HOST_TYPES and t.__module__.split(".", 1)[0] == "cupy"


def _cupy() -> Any:
    try:
        import cupy
    except ImportError:  # pragma: no cover - only without CuPy
        raise TypeError("a CuPy array was passed but CuPy cannot be imported; install "
                        "fastgd[cuda12] or fastgd[cuda13]") from None
    return cupy


def xp_of(a: Any) -> Any:
    """The array module (numpy or cupy) of ``a``."""
    return _cupy() if is_cupy(a) else np


def kind(a: Any) -> str:
    """"NumPy array", "CuPy array" or the type's name, for error messages."""
    if type(a) is np.ndarray:
        return "NumPy array"
    return "CuPy array" if is_cupy(a) else type(a).__name__


def device_of(a: Any) -> int:
    """The CUDA device id of a CuPy array, -1 for host arrays."""
    return a.device.id if is_cupy(a) else -1


def to_module_of(a: Any, like: Any) -> Any:
    """``a`` as an array of ``like``'s module and device (a copy across host/device)."""
    if is_cupy(like):
        cp = _cupy()
        with cp.cuda.Device(like.device.id):
            return cp.asarray(a)
    return a.get() if is_cupy(a) else np.asarray(a)


def as_float64(x: Any) -> Any:
    """A 0-d result (a sum, a norm) as float64 without waiting for the GPU.

    Returns:
        A Python float for NumPy data, a 0-d float64 CuPy array for CuPy data (reading it
        on the host would synchronize).
    """
    return x.astype(np.float64, copy=False) if is_cupy(x) else float(x)


def check_array(a: Any, name: str, *, writeable: bool = False) -> np.ndarray:
    """Check that ``a`` is an array fastgd can update and return it.

    Args:
        a: the array.
        name: how errors name it, e.g. ``"params[3]"``.
        writeable: the array will be written in place (parameters and state), so it must
            be writeable and C-contiguous.

    Raises:
        TypeError: not a NumPy or CuPy array, or a dtype other than float32 / float64.
        ValueError: ``writeable`` and the array is read-only or not C-contiguous.
    """
    if type(a) is not np.ndarray:
        if not is_cupy(a):
            raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")
        try:
            cp = _cupy()
        except TypeError:
            raise TypeError(f"{name} is a CuPy array ({type(a).__name__}) but CuPy cannot be "
                            "imported; install fastgd[cuda12] or fastgd[cuda13]") from None
        if not isinstance(a, cp.ndarray):
            raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; fastgd supports float32 and float64")
    if writeable:
        if not getattr(a.flags, "writeable", True):
            raise ValueError(f"{name} is read-only; parameters and state are updated in place")
        if not a.flags.c_contiguous:
            raise ValueError(
                f"{name} is not C-contiguous (strides {a.strides}); parameters and state are "
                "updated in place and must be contiguous: pass np.ascontiguousarray(...) and "
                "keep using that copy"
            )
    return a


def _data_field(field: int | None = None) -> int | None:
    """Where a NumPy array object holds its data pointer, or None if it cannot be read.

    NumPy's C struct of an array (``PyArrayObject_fields``, read by its ``PyArray_DATA``
    macro) starts with the object header and then the data pointer. On CPython an object's
    ``id`` is its address, so the pointer can be read in ~0.13 us where
    ``__array_interface__`` builds a dict in ~1.1 us (300 arrays a step: ~40 us instead
    of ~330). The offset is checked against ``__array_interface__`` on probe arrays
    (owning, offset view, transposed, empty, float32 and float64); anything else (another
    Python, another layout) keeps the slow, portable read.

    Args:
        field: the offset to check (default: the size of the object header).
    """
    if sys.implementation.name != "cpython":
        return None
    base = np.arange(12.0)
    probes = [base, base[3:], base.reshape(3, 4).T, np.empty(0, np.float32),
              np.ones(5, np.float32)[1:]]
    if field is None:
        field = object.__basicsize__  # the object header's size
    if all(ctypes.c_void_p.from_address(id(a) + field).value
           == a.__array_interface__["data"][0] for a in probes):
        return field
    return None


_DATA_FIELD = _data_field()
_read_pointer = ctypes.c_void_p.from_address


def _header_fields(data: int | None = None) -> np.ndarray | None:
    """Where an object holds its type and a NumPy array its data, shape, dtype and flags.

    As int64: the offset past an object's address of its type pointer (the header's last
    field), then of the fields of ``PyArrayObject_fields`` from the data pointer on (what
    NumPy's ``PyArray_DATA``, ``PyArray_NDIM``, ``PyArray_DIMS``, ``PyArray_DESCR`` and
    ``PyArray_FLAGS`` read): data, ``nd``, ``dimensions``, ``descr``, ``flags``; then the
    address of the ``numpy.ndarray`` type. None where they cannot be read. Like
    :func:`_data_field`, checked on probe arrays (0-d to 3-d, views, transposed,
    read-only, byte-swapped) against their type, ``ndim``, ``shape``, ``dtype`` and
    ``flags``; a 64-bit CPython only.

    Args:
        data: the offset of the data pointer (default: :data:`_DATA_FIELD`).
    """
    d = _DATA_FIELD if data is None else data
    if d is None or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    fields = np.array([d - 8, d, d + 8, d + 16, d + 40, d + 48, id(np.ndarray)], np.int64)
    base = np.arange(24.0)
    readonly = np.ones(3, np.float32)
    readonly.flags.writeable = False
    probes = [base, base[3:], base.reshape(2, 3, 4), base.reshape(4, 6).T, np.array(2.0),
              np.empty(0, np.float32), np.ones((5, 1), np.float32)[1:], readonly,
              np.ones(3, ">f8"), np.ones(7, np.int8)[::2]]

    def read(a: Any, k: int, kind: Any) -> int:
        return kind.from_address(id(a) + int(fields[k])).value or 0

    for a in probes:
        nd = read(a, 2, ctypes.c_int)
        flags = read(a, 5, ctypes.c_int)
        # the dimensions pointer is followed last, once everything else checked out
        if (read(a, 0, ctypes.c_void_p) != id(np.ndarray)
                or read(a, 1, ctypes.c_void_p) != a.__array_interface__["data"][0]
                or nd != a.ndim or read(a, 4, ctypes.c_void_p) != id(a.dtype)
                or bool(flags & 1) != a.flags.c_contiguous
                or bool(flags & 0x400) != a.flags.writeable
                or tuple(ctypes.c_int64.from_address(read(a, 3, ctypes.c_void_p) + 8 * k).value
                         for k in range(nd)) != a.shape):
            return None
    return fields


_HEADER_FIELDS = _header_fields()


class ShapeRecord:
    """Shapes and dtypes that arrays must have, checked in one compiled call.

    Built from arrays that passed the full check (:func:`shape_record`): later lists of
    arrays, new objects or the same ones again, are checked by :meth:`match` in one pass
    over their headers (~3 us for 300 arrays, where reading 300 types, flags, shapes and
    dtypes in Python takes ~70 us; the same objects may have been reshaped or given
    another dtype in place since). A dtype must be the recorded dtype object itself (the
    usual case: NumPy's builtin dtypes are singletons); an equal one fails the match, and
    the caller falls back to its full check.
    """

    __slots__ = ("descrs", "dims", "nds")

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.nds = np.fromiter(map(operator.attrgetter("ndim"), arrays), np.int32,
                               len(arrays))
        self.dims = np.array([d for a in arrays for d in a.shape], np.int64)
        self.descrs = np.fromiter((id(a.dtype) for a in arrays), np.int64, len(arrays))

    def match(self, ids: np.ndarray) -> np.ndarray | None:
        """The data addresses of the objects at ``ids`` if they match, else None.

        A match: as many objects as recorded, each a C-contiguous ``numpy.ndarray`` of the
        recorded shape and dtype. The caller holds the objects (``ids`` from
        :func:`ids_of` of a list it keeps while it uses the answer).
        """
        from fastgd.kernels.cpu.multi import headers_match

        if ids.size != self.nds.size:
            return None
        addresses = np.empty(ids.size, np.int64)
        if headers_match(ids, _HEADER_FIELDS, self.nds, self.dims, self.descrs, addresses):
            return addresses
        return None


def ids_of(objects: list[Any]) -> np.ndarray:
    """The objects' ids, as int64 (their addresses on CPython)."""
    return np.fromiter(map(id, objects), np.int64, len(objects))


def shape_record(arrays: list[Any]) -> ShapeRecord | None:
    """A :class:`ShapeRecord` of ``arrays``, or None (not all NumPy arrays; no header reads)."""
    if _HEADER_FIELDS is None or not all(map(operator.is_, map(type, arrays),
                                             repeat(np.ndarray))):
        return None
    return ShapeRecord(arrays)


def identity_keys(a: Any) -> tuple[Any, ...]:
    """What makes an array the same parameter as another.

    Its object, and (non-empty) where its memory starts and how many elements it has: a
    view of the same memory is the same parameter.
    """
    return (id(a), (address(a), a.size)) if a.size else (id(a),)


def addresses_of(arrays: list[Any]) -> np.ndarray:
    """The addresses of the arrays' first elements (host or device), as int64.

    NumPy arrays on CPython: their ids go to one compiled call that reads each data
    pointer (~10 us for 300 arrays, ~40 us through :func:`address` one by one).
    """
    n = len(arrays)
    if n and _DATA_FIELD is not None and set(map(type, arrays)) == {np.ndarray}:
        from fastgd.kernels.cpu.multi import pointers_at

        return pointers_at(ids_of(arrays), _DATA_FIELD)
    return np.fromiter(map(address, arrays), np.int64, n)


def address(a: Any) -> int:
    """The address of an array's first element (host or device)."""
    if type(a) is np.ndarray:
        if _DATA_FIELD is not None:
            return _read_pointer(id(a) + _DATA_FIELD).value or 0
        return a.__array_interface__["data"][0]
    return a.data.ptr


def span(arrays: list[np.ndarray]) -> np.ndarray | None:
    """One 1-D view over ``arrays`` when they lie back to back in one buffer, else None.

    The arrays must be C-contiguous, of one dtype, views of the same base array, and each
    must start where the previous one ends. A single contiguous array spans itself. Empty
    arrays occupy no memory and are passed over wherever they point (CuPy need not give an
    empty view an address inside its base).
    """
    first = arrays[0]
    if len(arrays) == 1:
        return first.reshape(-1)
    live = [a for a in arrays if a.size]
    if len(live) <= 1:
        return (live or arrays)[0].reshape(-1)
    first, arrays = live[0], live
    base = first.base if first.base is not None else first
    if type(base) is not type(first) or base.dtype != first.dtype or (
        not base.flags.c_contiguous
    ):
        return None
    itemsize = first.itemsize
    start, rem = divmod(address(first) - address(base), itemsize)
    if rem:
        return None
    end = address(first)
    total = 0
    for a in arrays:
        if (a.base if a.base is not None else a) is not base or address(a) != end:
            return None
        if not a.flags.c_contiguous:
            return None
        end += a.nbytes
        total += a.size
    return base.reshape(-1)[start : start + total]


class SpanMemo:
    """:func:`span` of lists of arrays, per key, found again for the same array objects.

    An array object's memory never moves: NumPy and CuPy fix its data pointer, base and
    size for its life (an in-place shape change keeps a C-contiguous array contiguous;
    setting strides is deprecated). So the same objects in the same order span what they
    spanned before, and a caller that passes the same gradient views every step (a
    FlatParams's, or a list made once by ``np.split``) pays an identity check (~15 ns an
    array) instead of reading every address (~1.2 us an array through NumPy's
    ``__array_interface__``). Holds references to the arrays it last saw per key.
    """

    __slots__ = ("_last",)

    #: Keys remembered at most (then forgotten all at once).
    LIMIT = 256

    def __init__(self) -> None:
        self._last: dict[Any, tuple[list[Any], Any]] = {}

    def __call__(self, key: Any, arrays: list[Any], kept: bool = False) -> Any:
        """``span(arrays)``, remembered under ``key``.

        ``kept``: the list is never changed (an optimizer's own checked list): it is kept
        itself, and the same list object again is known at once.
        """
        last = self._last.get(key)
        if last is not None and (last[0] is arrays or (len(last[0]) == len(arrays) and all(
                map(operator.is_, last[0], arrays)))):
            return last[1]
        out = span(arrays)
        if len(self._last) >= self.LIMIT:
            self._last.clear()
        self._last[key] = (arrays if kept else list(arrays), out)
        return out


def kernel_rule(module: str, name: str, backend: str = "cpu") -> Any:
    """Kernel ``name`` of rule module ``module`` in ``kernels/<backend>``."""
    return getattr(importlib.import_module(f"fastgd.kernels.{backend}.{module}"), name)


def _variants(module: str, name: str, flags: tuple[tuple[str, bool], ...]) -> _Variant:
    """The :class:`_Variant` of one kernel variant (its builds filled on first use)."""
    key = (module, name, flags)
    entry = _kernel_cache.get(key)
    if entry is None:
        entry = _kernel_cache[key] = _Variant(kernel_rule(module, name).threshold)
    return entry


def _build(module: str, name: str, flags: tuple[tuple[str, bool], ...], parallel: bool) -> Any:
    entry = _variants(module, name, flags)
    k = entry.builds[parallel] = kernel_rule(module, name).variant(parallel, flags)
    return k


class _KernelMode(threading.local):
    """Per thread: the size :func:`launch` compares with a kernel's parallel threshold.

    None: the array's own size. :func:`serial_kernels` sets -1 (never parallel); warm-up
    sets :data:`_ALL_PARALLEL`, above every measured threshold and below the
    ``NEVER_PARALLEL`` sentinel (2**62) of kernels that have no parallel build.
    """

    size: int | None = None


_mode = _KernelMode()
_SERIAL = -1
_ALL_PARALLEL = 2**61


@contextlib.contextmanager
def _forced_size(size: int | None) -> Iterator[None]:
    old = _mode.size
    _mode.size = _SERIAL if _forked_serial else size
    try:
        yield
    finally:
        _mode.size = _SERIAL if _forked_serial else old


#: True in a process forked from one whose Numba threading layer cannot run in a forked
#: child (GNU OpenMP: the child is killed on its first parallel launch): every CPU kernel of
#: this process then runs serially.
_forked_serial = False


def _after_fork_in_child() -> None:
    global _forked_serial
    numba = sys.modules.get("numba")
    if numba is None:
        return
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel ran before the fork: the child starts its own
        return
    if layer == "omp" and sys.platform.startswith("linux"):
        _forked_serial = True
        _KernelMode.size = _SERIAL  # the default of every thread, and of this one:
        _mode.size = _SERIAL


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def serial_kernels() -> contextlib.AbstractContextManager[None]:
    """Run every CPU kernel serially (one thread) inside the ``with`` block.

    Use it around loops that alternate BLAS matmuls and fastgd kernels (model training):
    OpenBLAS's and Numba's worker threads each spin-wait after their work, and on a
    2-core machine they then contend for the cores — an MLP training step measured 25-30x
    slower with both pools active than with fastgd's kernels serial. :func:`fastgd.fit`
    uses it. It applies to the calling thread only.

    Example:
        >>> import numpy as np, fastgd
        >>> with fastgd.serial_kernels():
        ...     fastgd.SGD([np.zeros(3)], lr=0.1).step([np.ones(3)])
        True
    """
    return _forced_size(_SERIAL)


def all_parallel_kernels() -> contextlib.AbstractContextManager[None]:
    """Run the parallel build of every CPU kernel that has one, whatever the array size.

    For warm-up (:meth:`fastgd.optim.Optimizer.warmup`): small scratch arrays then compile
    the parallel builds that large arrays will use. Applies to the calling thread only.
    """
    return _forced_size(_ALL_PARALLEL)


#: Chunks of a parallel reduction: fixed, so results do not depend on the thread count.
REDUCE_CHUNKS = 16


def reduce(name: str, x: Any, *scalars: float) -> Any:
    """Run reduction ``name`` of ``kernels/<backend>/reduce.py`` over the 1-D array ``x``.

    ``x`` may be a :class:`MultiSpan` of NumPy arrays (see :func:`multi_span`): one call
    reduces every work item (an array, or a chunk of a long one) serially into its own
    partial, the threads sharing the items; the partials depend only on the arrays'
    sizes, never on the thread count.

    Returns:
        The float64 partial results, for the caller to combine in order: a NumPy array
        (one per chunk, or per work item of a MultiSpan) for NumPy input, a 1-element
        device array for CuPy input.
    """
    if type(x) is MultiSpan and not x.cuda:  # one partial per work item, one call
        out = np.empty(x.layout.item_of.size)
        if out.size:
            _launch_multi("reduce", name, (), (x, *scalars, out), x)
        return out
    if type(x) is not np.ndarray:
        with on_device_of(x):
            return kernel_rule("reduce", name, "cuda")(x, *scalars)
    entry = _variants("reduce", name, ())
    parallel = _parallel(entry, x.size)
    out = np.empty(REDUCE_CHUNKS if parallel else 1)
    (entry.builds[parallel] or _build("reduce", name, (), parallel))(x, *scalars, out)
    return out


#: No rows: the ``ahead`` of a row gather with no next batch to prefetch (writable, as
#: the batches' rows are: a read-only array would compile another specialization).
NO_ROWS = np.empty(0, np.intp)

#: Elements per work item of a multi-array launch: long arrays are split so that the
#: threads of a parallel launch share the work evenly.
MULTI_CHUNK = 16_384


class MultiLayout:
    """The work items of multi-array launches over separate arrays of given sizes.

    Each array is one item, or chunks of :data:`MULTI_CHUNK` elements when longer; every
    :class:`MultiSpan` over arrays of these sizes shares the layout.
    """

    __slots__ = ("_bounds", "_device_sizes", "chunk_offsets", "chunk_sizes", "item_of",
                 "sizes", "total")

    def __init__(self, sizes: list[int]) -> None:
        n = np.asarray(sizes, dtype=np.int64)
        k = -(-n // MULTI_CHUNK)  # chunks per array (0 for an empty one)
        self.item_of = np.repeat(np.arange(n.size), k)
        first = np.repeat(np.cumsum(k) - k, k)
        self.chunk_offsets = (np.arange(self.item_of.size) - first) * MULTI_CHUNK
        self.chunk_sizes = np.ascontiguousarray(
            np.minimum(MULTI_CHUNK, n[self.item_of] - self.chunk_offsets))
        self.sizes = sizes
        self.total = int(n.sum())
        self._bounds: dict[int, np.ndarray] = {}
        self._device_sizes: dict[int, Any] = {}

    def device_sizes(self, like: Any) -> Any:
        """:attr:`chunk_sizes` on ``like``'s GPU (copied once per device)."""
        out = self._device_sizes.get(like.device.id)
        if out is None:
            with on_device_of(like):
                out = self._device_sizes[like.device.id] = _cupy().asarray(self.chunk_sizes)
        return out

    def bounds(self, threads: int) -> np.ndarray:
        """Item ranges ``bounds[t]:bounds[t + 1]`` giving ``threads`` threads equal work."""
        out = self._bounds.get(threads)
        if out is None:
            ends = np.cumsum(self.chunk_sizes)
            cuts = np.searchsorted(ends, self.total * np.arange(1, threads) / threads)
            out = self._bounds[threads] = np.concatenate(
                ([0], cuts + 1, [self.item_of.size])).clip(0, self.item_of.size).astype(np.int64)
        return out


class MultiSpan:
    """Separate arrays of one dtype that a kernel updates in one multi-array launch.

    The rule launchers pass it where they pass an array: :func:`launch` runs the kernel's
    multi-array driver over the arrays' memory (``kernels/cpu/multi.py``; for CuPy arrays
    a ``RawKernel`` built from the rule's CUDA body, ``kernels/cuda/_elementwise.py``, its
    address table on the device), with the results of one launch per array.

    Args:
        arrays: the arrays (NumPy, or CuPy on one device; C-contiguous, of any shape: the
            launch reads each as its ``size`` elements in memory order).
        layout: their :class:`MultiLayout`.
        addresses: their addresses, if known (else read from the arrays).
    """

    __slots__ = ("arrays", "cuda", "dtype", "layout", "size", "table")

    def __init__(self, arrays: list[Any], layout: MultiLayout,
                 addresses: Any = None) -> None:
        self.arrays = arrays
        self.layout = layout
        self.dtype = arrays[0].dtype
        self.size = layout.total
        self.cuda = type(arrays[0]) is not np.ndarray and is_cupy(arrays[0])
        if addresses is None:
            addresses = addresses_of(arrays)
        table = np.ascontiguousarray(
            addresses[layout.item_of] + layout.chunk_offsets * self.dtype.itemsize)
        if self.cuda:  # the kernel reads the table on the arrays' device
            with on_device_of(arrays[0]):
                table = _cupy().asarray(table)
        self.table = table


_layouts: dict[tuple[int, ...], MultiLayout] = {}
_SIZE = operator.attrgetter("size")


def multi_span(arrays: list[Any]) -> MultiSpan:
    """A :class:`MultiSpan` over C-contiguous arrays of one dtype.

    Its layout is shared by every list of arrays of these sizes (the last 64 are kept).
    """
    sizes = tuple(map(_SIZE, arrays))
    layout = _layouts.get(sizes)
    if layout is None:
        if len(_layouts) >= 64:
            _layouts.clear()
        layout = _layouts[sizes] = MultiLayout(list(sizes))
    return MultiSpan(list(arrays), layout)


_DTYPE = operator.attrgetter("dtype")


def per_dtype(*columns: list[Any]) -> list[tuple[Any, ...]]:
    """Kernel arguments for NumPy arrays launched together: a tuple per dtype.

    ``columns`` are lists of equal length of non-empty, C-contiguous NumPy arrays, the
    ``k``-th of each of one size and dtype (e.g. parameters and their averages). Per
    dtype of the first column, in order of first appearance: a :class:`MultiSpan` per
    column over the dtype's arrays where it has several (one multi-array launch, the
    results of one launch per array), else its lone arrays flattened.
    """
    first = columns[0]
    if len(first) == 1:
        return [tuple(c[0].reshape(-1) for c in columns)]
    if len(set(map(_DTYPE, first))) == 1:
        return [tuple(map(multi_span, columns))]
    by_dtype: dict[Any, list[int]] = {}
    for k, a in enumerate(first):
        by_dtype.setdefault(a.dtype, []).append(k)
    return [tuple(c[ks[0]].reshape(-1) for c in columns) if len(ks) == 1 else
            tuple(multi_span([c[k] for k in ks]) for c in columns)
            for ks in by_dtype.values()]


_multi_drivers: dict[tuple[Any, ...], Any] = {}
#: A multi-array driver's argument pattern, per argument type: "a" (a MultiSpan: an
#: address table), "o" (a NumPy array: a reduction's output, one element per work item)
#: or "s" (a scalar).
_PATTERN = {MultiSpan: "a", np.ndarray: "o"}
_TABLE = operator.attrgetter("table")


def _launch_multi(module: str, name: str, flags: tuple[tuple[str, bool], ...],
                  args: tuple[Any, ...], last: Any = None) -> None:
    """One multi-array launch.

    ``last`` is the MultiSpan giving the layout: by default the last argument, as in the
    update kernels (a reduction passes its input, before the output).
    """
    if last is None:
        last = args[-1]
    if last.cuda:
        _launch_multi_cuda(module, name, flags, args)
        return
    kinds = list(map(_PATTERN.get, map(type, args), repeat("s")))
    pattern = "".join(kinds)
    entry = _kernel_cache.get((module, name, flags)) or _variants(module, name, flags)
    parallel = _parallel(entry, last.size)
    key = (module, name, flags, pattern, last.dtype.str, parallel)
    driver = _multi_drivers.get(key)
    if driver is None:
        from numba import get_num_threads

        from fastgd.kernels.cpu import multi

        fn = multi.driver(module, name, flags, pattern, last.dtype.type, parallel)
        # where the pattern is an array, scalars, then arrays only (every rule's order):
        # the index of the trailing arrays, to pass their tables without a Python loop
        tail = len(pattern.rstrip("a"))
        split = tail if tail > 1 and pattern[0] == "a" and "a" not in pattern[1:tail] else None
        driver = _multi_drivers[key] = (fn, split, get_num_threads)
    fn, split, threads = driver
    layout = last.layout
    bounds = layout.bounds(threads() if parallel else 1)
    if split is None:
        fn(*[a.table if type(a) is MultiSpan else a for a in args], layout.chunk_sizes, bounds)
    else:
        fn(args[0].table, *args[1:split], *map(_TABLE, args[split:]), layout.chunk_sizes,
           bounds)


def _launch_multi_cuda(module: str, name: str, flags: tuple[tuple[str, bool], ...],
                       args: tuple[Any, ...]) -> None:
    """One ``RawKernel`` launch: a block per work item (``kernels/cuda/_elementwise``)."""
    rule = _cuda_rule(module, name)
    last = args[-1]
    if not last.size:
        return
    like = last.arrays[0]
    args = rule.keep(flags, _on_device_scalars(rule, args, like))
    pattern = "".join("a" if type(a) is MultiSpan else "s" for a in args)
    kernel = rule.multi(flags, pattern, last.dtype)
    scalar = last.dtype.type
    call = tuple(a.table if type(a) is MultiSpan else a if is_cupy(a) else scalar(a)
                 for a in args)
    from fastgd.kernels.cuda._elementwise import MULTI_THREADS

    with on_device_of(like):
        kernel((last.layout.item_of.size,), (MULTI_THREADS,),
               (*call, last.layout.device_sizes(like)))


def launch(module: str, name: str, flags: tuple[tuple[str, bool], ...], *args: Any) -> None:
    """Run kernel ``name`` of rule module ``module`` on ``args`` (validated by the caller).

    NumPy arrays run the Numba kernel: the serial build below the rule's threshold
    (``KernelRule.threshold``, measured per kind of rule) or inside
    :func:`serial_kernels`, the parallel build otherwise (or inside
    :func:`all_parallel_kernels` where the kernel has one). CuPy arrays run the CuPy twin
    (one launch).

    Args:
        module: the kernel module's stem, e.g. ``"adam"``.
        name: the kernel function in it.
        flags: variant flags as sorted ``(name, value)`` pairs.
        *args: the kernel's arguments: 1-D arrays of equal length and Python floats.
    """
    last = args[-1]
    if type(last) is not np.ndarray:
        if type(last) is MultiSpan:
            _launch_multi(module, name, flags, args)
        else:
            _launch_cuda(module, name, flags, args)
        return
    entry = _kernel_cache.get((module, name, flags)) or _variants(module, name, flags)
    parallel = _parallel(entry, last.size)
    (entry.builds[parallel] or _build(module, name, flags, parallel))(*args)


def launch_sized(size: int, module: str, name: str, flags: tuple[tuple[str, bool], ...],
                 *args: Any) -> None:
    """:func:`launch` for kernels whose work is not the size of their last array.

    A sparse update touches ``size`` elements of a large table: the serial or parallel
    build is chosen by that, not by the table's size.
    """
    last = args[-1]
    if type(last) is not np.ndarray:
        _launch_cuda(module, name, flags, args)
        return
    entry = _kernel_cache.get((module, name, flags)) or _variants(module, name, flags)
    parallel = _parallel(entry, size)
    (entry.builds[parallel] or _build(module, name, flags, parallel))(*args)


def runs_parallel(size: int, module: str, name: str,
                  flags: tuple[tuple[str, bool], ...] = ()) -> bool:
    """Whether :func:`launch_sized` would run the CPU kernel's parallel build for ``size``.

    The kernel's threshold, unless :func:`serial_kernels` or :func:`all_parallel_kernels`
    is in force on this thread.
    """
    entry = _kernel_cache.get((module, name, flags)) or _variants(module, name, flags)
    return _parallel(entry, size)


def _parallel(entry: Any, size: int) -> bool:
    """Whether ``size`` elements of work take the parallel build of kernel ``entry``.

    The kernel's threshold, unless :func:`serial_kernels` or :func:`all_parallel_kernels`
    forces a size on this thread.
    """
    forced = _mode.size
    return (size if forced is None else forced) >= entry.threshold


_cuda_rules: dict[tuple[str, str], Any] = {}
_device_scalars: dict[tuple[float, str, int], Any] = {}


def on_device_of(a: Any) -> contextlib.AbstractContextManager[Any]:
    """A block on ``a``'s GPU (CuPy arrays; nothing for NumPy arrays)."""
    if type(a) is np.ndarray or not is_cupy(a):
        return contextlib.nullcontext()
    return _cupy().cuda.Device(a.device.id)


def on_model_device(fn: Any) -> Any:
    """Decorator: ``fn(model, ...)`` runs on the GPU of ``model.flat``'s parameters.

    CuPy allocates and launches on the current device; a model (or a training loop) whose
    parameters live on another GPU would otherwise mix devices. NumPy models: no effect.
    """

    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        params = getattr(getattr(model, "flat", None), "params", None)
        with on_device_of(params[0] if params else None):
            return fn(model, *args, **kwargs)

    return wrapper


def device_scalar(value: float, like: Any) -> Any:
    """``value`` as a 1-element device array of ``like``'s dtype and device (cached)."""
    key = (value, like.dtype.str, like.device.id)
    a = _device_scalars.get(key)
    if a is None:
        if len(_device_scalars) > 64:
            _device_scalars.clear()
        cp = _cupy()
        with cp.cuda.Device(like.device.id):
            a = _device_scalars[key] = cp.full((1,), value, like.dtype)
    return a


def _cuda_rule(module: str, name: str) -> Any:
    """The CUDA twin of kernel ``name`` of ``module`` (looked up once)."""
    rule = _cuda_rules.get((module, name))
    if rule is None:
        rule = _cuda_rules[(module, name)] = kernel_rule(module, name, "cuda")
    return rule


def _on_device_scalars(rule: Any, args: tuple[Any, ...], like: Any) -> tuple[Any, ...]:
    """``args`` with each raw scalar as a 1-element device array on ``like``'s device.

    The raw scalars (the gradient scale gs, Adafactor's step) are device arrays so that
    one computed on the GPU reaches the kernel without a synchronization; a host number is
    put on the device (cached).
    """
    for i in rule.device_scalars:
        if not is_cupy(args[i]):
            args = (*args[:i], device_scalar(float(args[i]), like), *args[i + 1 :])
    return args


def _launch_cuda(module: str, name: str, flags: tuple[tuple[str, bool], ...],
                 args: tuple[Any, ...]) -> None:
    rule = _cuda_rule(module, name)
    if not args[-1].size:
        return
    args = _on_device_scalars(rule, args, args[-1])
    # launched on the arrays' device, whichever is current (several GPUs)
    with on_device_of(args[-1]):
        rule(flags, *args)
