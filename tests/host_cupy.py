"""CuPy emulated on the host: runs the GPU test-suite's Python paths on machines without a GPU.

Loaded as a pytest plugin (``python -m pytest -p tests.host_cupy tests/test_cuda.py``), it
patches the installed ``cupy`` module in that process so that:

- ``cupy.ndarray`` is :class:`ndarray`, an array kept in host memory that behaves like a
  CuPy array where fastgd could get it wrong: its type is not ``numpy.ndarray``, NumPy
  refuses to convert it implicitly, a NumPy array among a CuPy function's or operator's
  array arguments is a ``TypeError``, views keep their ``base``, and reading a value on the
  host (``get``, ``float``, ``bool``, ``item`` ...) is a synchronization that
  ``cupyx.allow_synchronize(False)`` turns into an error;
- the array functions fastgd and the tests use run NumPy on the host data;
- every ``ElementwiseKernel`` and ``ReductionKernel`` of ``kernels/cuda`` runs its CUDA
  C body on the host (``tests/cuda_host.py``), typed as CuPy types it;
- ``cupy.cuda`` reports two devices: arrays live on the device current when they were
  made (views on their base's), ``cupy.cuda.Device(i)`` switches the current one, and a
  kernel, operator or function given an array of the other device raises CuPy's
  ``ValueError`` (CuPy 14's message, for GPUs without peer access).

It checks the Python side of the CUDA backend (dispatch, allocation, state dicts,
checkpoints, clipping on the device, no host synchronization), not CuPy or the GPU.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

_sync_allowed = True
#: host synchronizations so far (reads of device data), allowed or not
sync_count = 0


class DeviceSynchronized(RuntimeError):
    """A host synchronization inside ``cupyx.allow_synchronize(False)``."""


def _sync() -> None:
    global sync_count
    sync_count += 1
    if not _sync_allowed:
        raise DeviceSynchronized("device synchronization is not allowed here")


@contextlib.contextmanager
def allow_synchronize(allow: bool) -> Iterator[None]:
    """Stand-in for ``cupyx.allow_synchronize``."""
    global _sync_allowed
    old, _sync_allowed = _sync_allowed, bool(allow)
    try:
        yield
    finally:
        _sync_allowed = old


#: the devices the emulation has, and the current one
N_DEVICES = 2
_current = [0]


class _MemoryPointer:
    def __init__(self, ptr: int, device_id: int) -> None:
        self.ptr = ptr
        self.device_id = device_id


class Device:
    """Stand-in for ``cupy.cuda.Device``: ``N_DEVICES`` devices; a block makes one current."""

    def __init__(self, device: int | None = None) -> None:
        self.id = _current[0] if device is None else int(device)
        if not 0 <= self.id < N_DEVICES:
            raise RuntimeError(f"no CUDA device {self.id} (host emulation has {N_DEVICES})")
        self._saved: list[int] = []

    def __enter__(self) -> Device:
        self._saved.append(_current[0])
        _current[0] = self.id
        return self

    def __exit__(self, *exc: Any) -> None:
        _current[0] = self._saved.pop()

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Device) and other.id == self.id

    __hash__ = None  # type: ignore[assignment]

    def synchronize(self) -> None:
        _sync()

    def use(self) -> None:
        _current[0] = self.id


def _on_current(a: ndarray) -> None:
    """CuPy's check of a kernel's array argument: on the current device (no peer access)."""
    if a._dev != _current[0]:
        raise ValueError(f"The device where the array resides ({a._dev}) is different from "
                         f"the current device ({_current[0]}). Peer access is unavailable "
                         "between these devices.")


def _unsupported(x: Any) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")


def _unwrap(x: Any) -> Any:
    """Host data of an emulated array; NumPy arrays are refused as CuPy refuses them."""
    if isinstance(x, ndarray):
        _on_current(x)
        return x._a
    if isinstance(x, np.ndarray):  # 0-d included: CuPy takes NumPy scalars (np.generic)
        raise _unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _owner(a: np.ndarray) -> Any:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a if a.base is None else a.base


def _wrap(r: Any, like: ndarray | None = None) -> Any:
    """Emulated array(s) for NumPy result(s); a view of ``like`` keeps ``like``'s base."""
    if isinstance(r, np.ndarray):
        if like is not None and r.base is not None and _owner(r) is _owner(like._a):
            return ndarray(r, like._base if like._base is not None else like)
        return ndarray(r)
    if isinstance(r, np.generic):
        return ndarray(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v, like) for v in r)
    return r


class ndarray:
    """A CuPy-like array over host memory."""

    __array_priority__ = 100

    def __init__(self, a: np.ndarray, base: ndarray | None = None) -> None:
        self._a = a
        self._base = base
        # a view lives on its base's device; anything new on the current one
        self._dev = base._dev if base is not None else _current[0]

    # --- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    base = property(lambda self: self._base)
    device = property(lambda self: Device(self._dev))
    T = property(lambda self: _wrap(self._a.T, self))

    @property
    def flags(self) -> Any:
        return _Flags(self._a.flags)

    @property
    def data(self) -> _MemoryPointer:
        return _MemoryPointer(self._a.__array_interface__["data"][0], self._dev)

    # --- host transfers (synchronizing)
    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> np.ndarray:
        _sync()
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy()

    def item(self) -> Any:
        _sync()
        return self._a.item()

    def tolist(self) -> Any:
        _sync()
        return self._a.tolist()

    def __float__(self) -> float:
        _sync()
        return float(self._a)

    def __int__(self) -> int:
        _sync()
        return int(self._a)

    def __bool__(self) -> bool:
        _sync()
        return bool(self._a)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __repr__(self) -> str:
        return f"host_cupy.ndarray({self._a!r})"

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self._a)):
            yield self[i]

    # --- views and copies
    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_unwrap(key)], self)

    def __setitem__(self, key: Any, value: Any) -> None:
        _on_current(self)
        self._a[_unwrap(key)] = _unwrap(value) if isinstance(value, ndarray) else value

    def reshape(self, *shape: Any, order: str = "C") -> ndarray:
        return _wrap(self._a.reshape(*shape, order=order), self)

    def ravel(self) -> ndarray:
        return _wrap(self._a.ravel(), self)

    def view(self, dtype: Any = None) -> ndarray:
        return _wrap(self._a.view() if dtype is None else self._a.view(dtype), self)

    def copy(self, order: str = "C") -> ndarray:  # onto the current device, as CuPy's
        return ndarray(self._a.copy(order=order))

    def astype(self, dtype: Any, copy: bool = True, **kwargs: Any) -> ndarray:
        _on_current(self)
        r = self._a.astype(dtype, copy=copy, **kwargs)
        return self if r is self._a else ndarray(r)

    def fill(self, value: Any) -> None:
        _on_current(self)
        self._a.fill(value)

    def __getattr__(self, name: str) -> Any:
        # Reductions and other methods (sum, max, mean, ...) run on the host data.
        attr = getattr(self._a, name)
        if not callable(attr):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            _on_current(self)
            out = kwargs.get("out")
            if out is not None:
                kwargs["out"] = _unwrap(out)
            r = attr(*_unwrap(args), **kwargs)
            return out if out is not None else _wrap(r, self)

        return method

    # --- NumPy protocols: NumPy functions on emulated arrays stay emulated
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        r = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(r)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _call(func, args, kwargs)


class _Flags:
    def __init__(self, flags: Any) -> None:
        self.c_contiguous = flags.c_contiguous
        self.f_contiguous = flags.f_contiguous
        self.owndata = flags.owndata


def _binary(op: Any) -> Any:
    def method(self: ndarray, other: Any) -> Any:
        return _wrap(op(_unwrap(self), _unwrap(other)))
    return method


def _reflected(op: Any) -> Any:
    def method(self: ndarray, other: Any) -> Any:
        return _wrap(op(_unwrap(other), _unwrap(self)))
    return method


def _inplace(op: Any) -> Any:
    def method(self: ndarray, other: Any) -> ndarray:
        op(_unwrap(self), _unwrap(other))
        return self
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "pow", "mod", "matmul",
              "and", "or", "xor"):
    _op = getattr(operator, _name + "_") if _name in ("and", "or") else getattr(operator, _name)
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _reflected(_op))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "gt", "ge", "eq", "ne"):
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name)))
ndarray.__neg__ = lambda self: ndarray(-_unwrap(self))  # type: ignore[attr-defined]
ndarray.__pos__ = lambda self: ndarray(+_unwrap(self))  # type: ignore[attr-defined]
ndarray.__abs__ = lambda self: ndarray(abs(_unwrap(self)))  # type: ignore[attr-defined]
ndarray.__hash__ = None  # type: ignore[assignment]
ndarray.__module__ = "cupy"  # fastgd recognizes CuPy arrays by their type's module


def _call(func: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    """``func`` (a NumPy function) on emulated arrays; ``out=`` is written in place."""
    out = kwargs.get("out")
    if out is not None:
        kwargs = {**kwargs, "out": _unwrap(out)}
    kwargs = {k: (_unwrap(v) if k != "out" else v) for k, v in kwargs.items()}
    r = func(*_unwrap(tuple(args)), **kwargs)
    return out if out is not None else _wrap(r)


def _creation(name: str) -> Any:
    fn = getattr(np, name)

    def create(*args: Any, **kwargs: Any) -> ndarray:
        return ndarray(fn(*_unwrap(args), **kwargs))
    return create


def asarray(a: Any, dtype: Any = None, order: Any = None, **kwargs: Any) -> ndarray:
    """``cupy.asarray``: a host-to-device copy, or ``a`` itself."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return ndarray(np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a: Any, dtype: Any = None, copy: bool = True, order: str = "K", **kwargs: Any
          ) -> ndarray:
    """``cupy.array``."""
    if isinstance(a, ndarray):
        r = np.array(a._a, dtype=dtype, copy=copy, order=order)
        return a if r is a._a else ndarray(r)
    return ndarray(np.array(a, dtype=dtype, copy=True, order=order))


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    """``cupy.ascontiguousarray``."""
    a = asarray(a)
    r = np.ascontiguousarray(a._a, dtype=dtype)
    return a if r is a._a else ndarray(r)


def copyto(dst: ndarray, src: Any, **kwargs: Any) -> None:
    """``cupy.copyto``."""
    np.copyto(_unwrap(dst), _unwrap(src), **kwargs)


def may_share_memory(a: Any, b: Any, max_work: Any = None) -> bool:
    """``cupy.may_share_memory``."""
    return bool(np.may_share_memory(_unwrap(a), _unwrap(b)))


def _function(name: str) -> Any:
    fn = getattr(np, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        return _call(fn, args, kwargs)
    call.__name__ = name
    return call


_CREATION = ("zeros", "ones", "empty", "full", "arange", "linspace", "eye")
_LIKE = ("zeros_like", "ones_like", "empty_like", "full_like")
_FUNCTIONS = (
    "add", "subtract", "multiply", "divide", "true_divide", "negative", "power", "sqrt",
    "exp", "log", "log1p", "tanh", "abs", "absolute", "sign", "maximum", "minimum", "square",
    "matmul", "dot", "sum", "max", "min", "mean", "amax", "amin", "argmax", "concatenate",
    "stack", "take", "where", "isfinite", "isnan", "all", "any", "clip", "broadcast_to",
    "allclose", "array_equal", "count_nonzero", "cumsum", "sort", "unique", "nan_to_num",
)


class _HostElementwise:
    """An ``ElementwiseKernel`` whose body runs on the host."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.name = kernel.name

    def __call__(self, *args: Any) -> Any:
        from tests.cuda_host import run_elementwise

        run_elementwise(self.kernel, *(_unwrap(a) for a in args))


class _HostRawKernel:
    """A ``RawKernel`` whose blocks and threads run on the host (``cuda_host.run_raw``)."""

    def __init__(self, source: str, name: str) -> None:
        self.source, self.name = source, name

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: Any) -> None:
        from tests.cuda_host import run_raw

        run_raw(self.source, self.name, int(grid[0]), int(block[0]),
                [_unwrap(a) if isinstance(a, ndarray) else a for a in args])


def _host_reduction(self: Any, x: Any, *scalars: Any) -> Any:
    """A reduction twin's call, run on the host (its real ReductionKernel, typed by CuPy)."""
    from tests.cuda_host import run_reduction

    kernel, args = self.bound(x, *scalars)
    return ndarray(run_reduction(
        kernel, *(_unwrap(a) if isinstance(a, ndarray) else a for a in args)).reshape(1))


def _host_rows(self: Any, *arrays2d: Any) -> Any:
    """A multi-input reduction's row sums (``axis=1``), a host reduction per row."""
    from tests.cuda_host import run_reduction

    rows = [_unwrap(a) for a in arrays2d]
    return ndarray(np.array([run_reduction(self.kernel, *(r[i] for r in rows))
                             for i in range(rows[0].shape[0])]))


def install() -> None:
    """Patch the installed ``cupy`` (and fastgd's CUDA kernels) in this process."""
    import cupy
    import cupyx
    from fastgd.kernels.cuda import _elementwise, reduce

    cupy.ndarray = ndarray
    for name in _CREATION:
        setattr(cupy, name, _creation(name))
    for name in (*_LIKE, *_FUNCTIONS):
        setattr(cupy, name, _function(name))
    for fn in (asarray, array, ascontiguousarray, copyto, may_share_memory):
        setattr(cupy, fn.__name__, fn)
    cupy.cuda.Device = Device
    cupy.RawKernel = _HostRawKernel
    cupy.cuda.runtime.getDeviceCount = lambda: N_DEVICES
    cupy.cuda.runtime.getDeviceProperties = lambda i: {"name": b"host emulation"}
    cupyx.allow_synchronize = allow_synchronize
    cupyx.DeviceSynchronized = DeviceSynchronized

    real_variant = _elementwise.CudaRule.variant
    _elementwise.CudaRule.variant = (  # type: ignore[method-assign]
        lambda rule, flags=(): _HostElementwise(real_variant(rule, flags)))
    _elementwise.CudaRule._real_variant = real_variant  # type: ignore[attr-defined]
    reduce._Reduction.__call__ = _host_reduction  # type: ignore[method-assign]
    reduce._RowsReduction._rows = _host_rows  # type: ignore[method-assign]
    reduce.clip_coef = _HostElementwise(reduce.clip_coef)


def pytest_configure(config: Any) -> None:
    """Install the emulation when loaded with ``-p tests.host_cupy``."""
    install()
