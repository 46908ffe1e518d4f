"""THE dispatch point: an array's type decides which compute layer runs.

NumPy arrays go to the Numba kernels in ``kernels/cpu``. CuPy arrays are recognized by
their type's module, without importing CuPy, and are refused with a clear error until the
CUDA backend is installed. Everything that needs to know about array types (validation,
allocation, the addresses used to find adjacent arrays, kernel launches) asks this module.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

__all__ = [
    "FLOAT_DTYPES",
    "address",
    "check_array",
    "is_cupy",
    "launch",
    "span",
]

#: The parameter dtypes every rule supports; state is kept in the parameter's dtype.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# (module, kernel, flags) -> [parallel threshold, serial dispatcher, parallel dispatcher]
_kernel_cache: dict[tuple[Any, ...], list[Any]] = {}


def is_cupy(a: Any) -> bool:
    """Whether ``a`` is a CuPy array (checked without importing CuPy)."""
    return type(a).__module__.split(".", 1)[0] == "cupy"


def check_array(a: Any, name: str, *, writeable: bool = False) -> np.ndarray:
    """Check that ``a`` is an array fastgd can update and return it.

    Args:
        a: the array.
        name: how errors name it, e.g. ``"params[3]"``.
        writeable: the array will be written in place (parameters and state), so it must
            be writeable and C-contiguous.

    Raises:
        TypeError: not a NumPy array (a CuPy array when the CUDA backend is not installed),
            or a dtype other than float32 / float64.
        ValueError: ``writeable`` and the array is read-only or not C-contiguous.
    """
    if type(a) is not np.ndarray:
        if is_cupy(a):
            raise TypeError(
                f"{name} is a CuPy array, but CUDA support is not installed in this version "
                "of fastgd; pass NumPy arrays"
            )
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {a.dtype}; fastgd supports float32 and float64")
    if writeable:
        if not a.flags.writeable:
            raise ValueError(f"{name} is read-only; parameters and state are updated in place")
        if not a.flags.c_contiguous:
            raise ValueError(
                f"{name} is not C-contiguous (strides {a.strides}); parameters and state are "
                "updated in place and must be contiguous: pass np.ascontiguousarray(...) and "
                "keep using that copy"
            )
    return a


def address(a: np.ndarray) -> int:
    """The address of an array's first element."""
    return a.__array_interface__["data"][0]


def span(arrays: list[np.ndarray]) -> np.ndarray | None:
    """One 1-D view over ``arrays`` when they lie back to back in one buffer, else None.

    The arrays must be C-contiguous, of one dtype, views of the same base array, and each
    must start where the previous one ends. A single contiguous array spans itself.
    """
    first = arrays[0]
    if len(arrays) == 1:
        return first.reshape(-1)
    base = first.base if first.base is not None else first
    if type(base) is not np.ndarray or base.dtype != first.dtype or not base.flags.c_contiguous:
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


def kernel_rule(module: str, name: str) -> Any:
    """The :class:`~fastgd.kernels.cpu._jit.KernelRule` ``name`` of rule module ``module``."""
    return getattr(importlib.import_module(f"fastgd.kernels.cpu.{module}"), name)


def _variants(module: str, name: str, flags: tuple[tuple[str, bool], ...]) -> list[Any]:
    """``[threshold, serial, parallel]`` for one kernel variant (builds filled on first use)."""
    key = (module, name, flags)
    entry = _kernel_cache.get(key)
    if entry is None:
        entry = _kernel_cache[key] = [kernel_rule(module, name).threshold, None, None]
    return entry


def _build(module: str, name: str, flags: tuple[tuple[str, bool], ...], parallel: bool) -> Any:
    entry = _variants(module, name, flags)
    k = entry[1 + parallel] = kernel_rule(module, name).variant(parallel, flags)
    return k


#: Chunks of a parallel reduction: fixed, so results do not depend on the thread count.
REDUCE_CHUNKS = 16


def reduce(name: str, x: np.ndarray, *scalars: float) -> np.ndarray:
    """Run reduction ``name`` of ``kernels/cpu/reduce.py`` over the 1-D array ``x``.

    Returns:
        The float64 partial results, one per chunk, for the caller to combine in order.
    """
    entry = _variants("reduce", name, ())
    parallel = x.size >= entry[0]
    out = np.empty(REDUCE_CHUNKS if parallel else 1)
    (entry[1 + parallel] or _build("reduce", name, (), parallel))(x, *scalars, out)
    return out


def launch(module: str, name: str, flags: tuple[tuple[str, bool], ...], *args: Any) -> None:
    """Run kernel ``name`` of rule module ``module`` on ``args`` (validated by the caller).

    The serial build runs below the rule's threshold (``KernelRule.threshold``, measured
    per kind of rule), the parallel build from there on.

    Args:
        module: the kernel module's stem, e.g. ``"adam"``.
        name: the kernel function in it.
        flags: variant flags as sorted ``(name, value)`` pairs.
        *args: the kernel's arguments: 1-D arrays of equal length and Python floats.
    """
    entry = _kernel_cache.get((module, name, flags)) or _variants(module, name, flags)
    parallel = args[-1].size >= entry[0]
    (entry[1 + parallel] or _build(module, name, flags, parallel))(*args)
