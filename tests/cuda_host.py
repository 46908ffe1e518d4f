"""CuPy kernels run on the host, for checking the CUDA C bodies on machines without a GPU.

:func:`run_elementwise` takes a real ``cupy.ElementwiseKernel`` (as ``kernels/cuda``
builds it) and NumPy arrays, types the call with CuPy's own rule
(``cupy._core._kernel._decide_params_type``: a placeholder ``T`` binds to one dtype, a
mismatch is a ``TypeError``, Python scalars are cast to their parameter's type),
broadcasts the non-raw arrays as CuPy does, and runs the kernel body compiled as C++ by the
system compiler, one loop iteration per element. Declarations follow CuPy's generated code:
a non-raw input is ``const T &x`` bound to its element, an output ``T &x``, a ``raw``
argument a ``CArray`` (``x[j]``, ``x.shape()``; const for inputs), ``i`` the element index.
:func:`run_reduction` does the same for a ``cupy.ReductionKernel`` (map, reduce and
post-map expressions, sequential order).

:func:`cupy_source` returns the CUDA source CuPy itself generates for such a call (its
private code generator, which needs no GPU), for compiling with nvcc.

What it cannot check: CUDA's own math library (results may differ in the last bits),
code that only a GPU compiler accepts, or launch and memory behaviour; those are left to
the ``cuda``-marked tests on a real device.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CXX = shutil.which("g++") or shutil.which("c++")


def cupy_internals_missing() -> str | None:
    """Why CuPy's private typing and code generation cannot be used here, or None."""
    try:
        import cupy
        from cupy._core import _carray, _kernel, _reduction, _scalar, core
    except Exception as e:  # ImportError, or a broken CUDA install
        return f"CuPy cannot be imported: {e}"
    needed = [(_kernel, "_decide_params_type"), (_kernel, "_ArgInfo"), (_kernel, "_TypeMap"),
              (_kernel, "_get_elementwise_kernel_code"), (_scalar, "get_typename"),
              (_scalar, "CScalar"), (_carray, "Indexer"),
              (_reduction, "_create_reduction_function_code"), (core, "_cupy_header_list"),
              (core, "_get_cccl_include_options"), (core, "_get_header_dir_path")]
    gone = [f"{m.__name__}.{a}" for m, a in needed if not hasattr(m, a)]
    if gone:
        return f"CuPy {cupy.__version__} lacks {', '.join(gone)} (checked with 14.2)"
    return None

_PRELUDE = r"""
#include <algorithm>
#include <cmath>
#include <cstddef>
using namespace std;

// The part of CuPy's CArray that kernel bodies use on raw arguments.
template <typename U> struct CArray {
  U* data_;
  const ptrdiff_t* shape_;
  ptrdiff_t size_;
  U& operator[](ptrdiff_t j) { return data_[j]; }
  const U& operator[](ptrdiff_t j) const { return data_[j]; }
  const ptrdiff_t* shape() const { return shape_; }
  ptrdiff_t size() const { return size_; }
};
struct CIndexer {
  ptrdiff_t size_;
  ptrdiff_t size() const { return size_; }
};
"""

_MAX_NDIM = 4
_libraries: dict[str, Any] = {}


def _cache_dir() -> Path:
    d = Path(os.environ.get("FASTGD_HOST_KERNEL_CACHE",
                            Path(tempfile.gettempdir()) / f"fastgd-host-kernels-{os.getuid()}"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cpu_has_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " fma" in line for line in f)
    except OSError:
        return False


#: NVRTC fuses a * b + c into one fused multiply-add by default (``--fmad=true``), so a
#: GPU result differs from the same C++ rounded step by step; the host builds do the same
#: where the CPU has FMA instructions (x86-64 since Haswell / Zen), and the parity tests
#: hold at their tolerances with it. Without FMA they round each step (``off``).
FMA = _cpu_has_fma()
FP_FLAGS = (["-mfma", "-ffp-contract=fast", "-fexpensive-optimizations"]  # GCC forms FMAs
            if FMA else ["-ffp-contract=off"])                        # there, not at -O1


def _compile(source: str, symbol: str) -> Any:
    """The function ``symbol`` of ``source`` compiled into a shared library (cached by hash)."""
    digest = hashlib.sha256((" ".join(FP_FLAGS) + source).encode()).hexdigest()[:24]
    lib = _libraries.get(digest)
    if lib is None:
        so = _cache_dir() / f"{symbol}-{digest}.so"
        if not so.exists():
            src = so.with_suffix(".cpp")
            src.write_text(source)
            tmp = so.with_suffix(f".{os.getpid()}.tmp")
            res = subprocess.run(
                [CXX, "-std=c++17", "-O1", *FP_FLAGS, "-shared", "-fPIC",
                 "-Wno-unused-variable", str(src), "-o", str(tmp)],
                capture_output=True, text=True, timeout=120,
            )
            if res.returncode:
                raise CompileError(f"{symbol}:\n{res.stderr[-3000:]}\n--- source ---\n{source}")
            os.replace(tmp, so)
        lib = _libraries[digest] = ctypes.CDLL(str(so))
    fn = getattr(lib, symbol)
    fn.argtypes = [ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_void_p),
                   ctypes.POINTER(ctypes.c_ssize_t)]
    fn.restype = None
    return fn


class CompileError(RuntimeError):
    """The host compiler refused a kernel body."""


def _typename(dtype: np.dtype) -> str:
    from cupy._core._scalar import get_typename

    return get_typename(np.dtype(dtype))


def _typedefs(placeholders: dict[str, np.dtype]) -> str:
    return "".join(f"typedef {_typename(t)} {c};\n" for c, t in sorted(placeholders.items()))


def _dtypes(in_args: tuple[Any, ...], out_args: tuple[Any, ...]) -> tuple[tuple, tuple]:
    def dt(a: Any) -> Any:
        return a.dtype if isinstance(a, np.ndarray) else None

    return tuple(map(dt, in_args)), tuple(map(dt, out_args))


def _types(kernel: Any, in_args: tuple[Any, ...], out_args: tuple[Any, ...]):
    """CuPy's typing of a call: the parameters' dtypes and the placeholder bindings."""
    from cupy._core._kernel import _decide_params_type

    in_types, out_types, _ = _decide_params_type(
        kernel.in_params, kernel.out_params, *_dtypes(in_args, out_args))
    params = kernel.in_params + kernel.out_params
    types = tuple(in_types) + tuple(out_types)
    placeholders = {p.ctype: np.dtype(t) for p, t in zip(params, types) if p.dtype is None}
    return params, types, placeholders


def _loop_shape(kernel: Any, params, args) -> tuple[int, ...]:
    loop = [a for p, a in zip(params, args) if isinstance(a, np.ndarray) and not p.raw]
    if not loop:
        raise ValueError(f"{kernel.name}: loop size is undecided (no non-raw array)")
    shape = np.broadcast_shapes(*(a.shape for a in loop))
    for p, a in zip(kernel.out_params, args[len(kernel.in_params):]):
        if not p.raw and a.shape != shape:
            raise ValueError(f"{kernel.name}: out shape of {p.name} is mismatched")
    return shape


def cupy_headers() -> str:
    """The ``#include`` lines CuPy puts before every kernel it compiles."""
    from cupy._core import core

    return "".join(f"#include <{h}>\n" for h in core._cupy_header_list)


def _array_info(a: np.ndarray, ndim: int, c_contiguous: bool = True) -> Any:
    from cupy import ndarray
    from cupy._core import _kernel

    return _kernel._ArgInfo(1, ndarray, a.dtype, ndim, c_contiguous, True)


def _scalar_info(dtype: Any) -> Any:
    from cupy._core import _kernel, _scalar

    return _kernel._ArgInfo(3, _scalar.CScalar, np.dtype(dtype), 0, True, True)


def _indexer_info(ndim: int) -> Any:
    from cupy._core import _carray, _kernel

    return _kernel._ArgInfo(2, _carray.Indexer, None, ndim, True, True)


def cupy_source(kernel: Any, *args: Any, name: str | None = None) -> str:
    """CuPy's CUDA source for ElementwiseKernel ``kernel`` launched on ``args`` (NumPy stand-ins).

    Array arguments are described as CuPy describes device arrays after its dimension
    reduction: contiguous non-raw arrays as 1-D, broadcast ones with the loop's shape,
    raw arrays as they are; 32-bit indexing. ``name`` renames the kernel function.
    """
    from cupy._core import _kernel

    nin = len(kernel.in_params)
    params, types, placeholders = _types(kernel, args[:nin], args[nin:])
    shape = _loop_shape(kernel, params, args)
    broadcast = any(isinstance(a, np.ndarray) and not p.raw and a.shape != shape
                    for p, a in zip(params, args))
    ndim = len(shape) if broadcast else 1
    infos = []
    for p, t, a in zip(params, types, args):
        if not isinstance(a, np.ndarray):
            infos.append(_scalar_info(t))
        elif p.raw:
            infos.append(_array_info(a, a.ndim))
        else:
            infos.append(_array_info(a, ndim, not broadcast or a.shape == shape))
    infos.append(_indexer_info(ndim))
    type_map = _kernel._TypeMap(tuple(sorted(placeholders.items())))
    return _kernel._get_elementwise_kernel_code(
        tuple(infos), type_map, kernel.params, kernel.operation, name or kernel.name,
        kernel.preamble)


def cupy_reduction_source(kernel: Any, x: np.ndarray, *scalars: Any,
                          name: str | None = None) -> str:
    """CuPy's CUDA source for ReductionKernel ``kernel`` reducing all of ``x`` to a scalar."""
    from cupy._core import _kernel, _reduction

    args = (x, *scalars)
    out_p = kernel.out_params[0]
    out = np.zeros((), out_p.dtype)
    _, types, placeholders = _types(kernel, args, (out,))
    in_types = types[: len(args)]
    infos = [_array_info(x, 1) if isinstance(a, np.ndarray) else _scalar_info(t)
             for a, t in zip(args, in_types)]
    infos += [_array_info(out, 0), _indexer_info(1), _indexer_info(0),
              _scalar_info(np.int32)]
    type_map = _kernel._TypeMap((*sorted(placeholders.items()),
                                 ("IndexT", np.dtype(np.int32))))
    input_expr = "\n".join(
        f"const {p.ctype} {p.name} = _raw_{p.name}[_in_ind.get()];"
        for p, a in zip(kernel.in_params, args) if isinstance(a, np.ndarray))
    output_expr = f"{out_p.ctype} &{out_p.name} = _raw_{out_p.name}[_out_ind.get()];"
    return _reduction._create_reduction_function_code(
        name or kernel.name, 512, kernel.reduce_type or out_p.ctype, kernel._params,
        tuple(infos), kernel.identity, kernel.map_expr, kernel.reduce_expr,
        kernel.post_map_expr, type_map, input_expr, output_expr, kernel.preamble, ())


def nvcc_include_options() -> list[str]:
    """The include options CuPy compiles its kernels with."""
    from cupy._core import core

    return [*core._get_cccl_include_options(), f"-I{core._get_header_dir_path()}"]


def _prologue(params, types, args, shapes: list[int]) -> tuple[list[str], list[str], list]:
    """Declarations outside and inside the element loop, and the pointers to pass."""
    outside, inside, keep = [], [], []
    for k, (p, t, a) in enumerate(zip(params, types, args)):
        ctype = p.ctype if p.dtype is None else _typename(t)
        const = "const " if p.is_const else ""
        if isinstance(a, np.ndarray) and p.raw:
            if not a.flags.c_contiguous:
                raise NotImplementedError(f"{p.name}: the host runner takes C-contiguous arrays")
            if a.ndim > _MAX_NDIM:
                raise NotImplementedError(f"{p.name}: more than {_MAX_NDIM} dimensions")
            shape = list(a.shape) + [1] * (_MAX_NDIM - a.ndim)
            off = len(shapes)
            shapes.extend(shape)
            outside.append(f"{const}CArray<{ctype}> {p.name}{{static_cast<{ctype}*>(_a[{k}]), "
                           f"_s + {off}, {a.size}}};")
            keep.append(a)
        elif isinstance(a, np.ndarray):
            inside.append(f"{const}{ctype} &{p.name} = static_cast<{ctype}*>(_a[{k}])[i];")
            keep.append(a)
        else:
            v = np.array(a, dtype=t)  # CuPy casts a scalar to its parameter's type
            outside.append(f"const {ctype} {p.name} = *static_cast<const {ctype}*>(_a[{k}]);")
            keep.append(v)
    return outside, inside, keep


def _call(fn: Any, n: int, arrays: list[np.ndarray], shapes: list[int]) -> None:
    ptrs = (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
    shp = (ctypes.c_ssize_t * max(len(shapes), 1))(*shapes)
    fn(n, ptrs, shp)


def run_elementwise(kernel: Any, *args: Any) -> None:
    """Run ``cupy.ElementwiseKernel`` ``kernel`` on NumPy ``args`` (inputs, then outputs).

    Raises:
        TypeError: CuPy would refuse the argument types.
        ValueError: CuPy would refuse the shapes.
        CompileError: the body is not valid C++ for these types.
    """
    nin, nout = len(kernel.in_params), len(kernel.out_params)
    if len(args) != nin + nout:
        raise TypeError(f"{kernel.name} takes {nin} inputs and {nout} outputs, got "
                        f"{len(args)} arguments")
    for p, a in zip(kernel.out_params, args[nin:]):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{kernel.name}: output {p.name} must be an array")
    params, types, placeholders = _types(kernel, args[:nin], args[nin:])
    shape = _loop_shape(kernel, params, args)
    if 0 in shape:
        return  # CuPy launches nothing
    staged = []
    for p, a in zip(params, args):
        if isinstance(a, np.ndarray) and not p.raw:
            if p.is_const:
                a = np.ascontiguousarray(np.broadcast_to(a, shape))
            elif not a.flags.c_contiguous:
                raise NotImplementedError(f"{p.name}: the host runner takes C-contiguous outputs")
        staged.append(a)
    shapes: list[int] = []
    outside, inside, keep = _prologue(params, types, staged, shapes)
    symbol = f"{kernel.name}_host"
    source = (
        _PRELUDE + _typedefs(placeholders)
        + f'extern "C" void {symbol}(ptrdiff_t _n, void** _a, const ptrdiff_t* _s) {{\n'
        + "  CIndexer _ind{_n};\n  " + "\n  ".join(outside) + "\n"
        + "  for (ptrdiff_t i = 0; i < _n; ++i) {\n    " + "\n    ".join(inside)
        + "\n    {\n" + kernel.operation + "\n    }\n  }\n}\n"
    )
    _call(_compile(source, symbol), int(np.prod(shape)), keep, shapes)


def run_reduction(kernel: Any, x: np.ndarray, *scalars: Any) -> np.ndarray:
    """Run ``cupy.ReductionKernel`` ``kernel`` over all of ``x``; returns the 0-d result.

    ``scalars`` may hold more arrays of ``x``'s size, reduced with it (a dot product).
    """
    args = (x, *scalars)
    if len(args) != len(kernel.in_params):
        raise TypeError(f"{kernel.name} takes {len(kernel.in_params)} inputs")
    out_p = kernel.out_params[0]
    if out_p.dtype is None:
        raise NotImplementedError("the host runner needs an explicitly typed output")
    out = np.zeros((), out_p.dtype)
    params, types, placeholders = _types(kernel, args, (out,))
    shapes: list[int] = []
    x = np.ascontiguousarray(x).reshape(-1)
    scalars = tuple(np.ascontiguousarray(a).reshape(-1) if isinstance(a, np.ndarray) else a
                    for a in scalars)
    if any(isinstance(a, np.ndarray) and a.size != x.size for a in scalars):
        raise ValueError(f"{kernel.name}: the reduced arrays differ in size")
    outside, inside, keep = _prologue(params[:-1], types[:-1], (x, *scalars), shapes)
    keep.append(out)
    reduce_type = kernel.reduce_type or out_p.ctype
    symbol = f"{kernel.name}_host"
    k = len(args)
    source = (
        _PRELUDE + _typedefs(placeholders)
        + f"typedef {reduce_type} _type_reduce;\n"
        + f"#define REDUCE(a, b) ({kernel.reduce_expr})\n"
        + f"#define POST_MAP(a) ({kernel.post_map_expr})\n"
        + f'extern "C" void {symbol}(ptrdiff_t _n, void** _a, const ptrdiff_t* _s) {{\n'
        + "  " + "\n  ".join(outside) + "\n"
        + f"  _type_reduce _acc = _type_reduce({kernel.identity});\n"
        + "  for (ptrdiff_t i = 0; i < _n; ++i) {\n    " + "\n    ".join(inside) + "\n"
        + f"    _type_reduce _b = static_cast<_type_reduce>({kernel.map_expr});\n"
        + "    _acc = REDUCE(_acc, _b);\n  }\n"
        + f"  {out_p.ctype} &{out_p.name} = *static_cast<{out_p.ctype}*>(_a[{k}]);\n"
        + "  POST_MAP(_acc);\n}\n"
    )
    _call(_compile(source, symbol), x.size, keep, shapes)
    return out


_RAW_PRELUDE = r"""
#define __global__
struct _Dim3 { long long x; };
static _Dim3 blockIdx, threadIdx, blockDim, gridDim;
"""


def _raw_params(source: str, name: str) -> list[str]:
    """The parameter declarations of kernel ``name`` in a RawKernel ``source``."""
    head = source.split(f"void {name}(", 1)[1].split(") {", 1)[0]
    return [p.strip() for p in head.split(",")]


def run_raw(source: str, name: str, grid: int, block: int, args: list[Any]) -> None:
    """Run ``cupy.RawKernel(source, name)`` on the host: every block and thread in turn.

    ``args``: per kernel parameter, a NumPy array for a pointer parameter (its address is
    passed: a table of addresses, a raw device scalar) or a NumPy scalar for a by-value
    one, whose type must be the parameter's. Blocks and threads run one after another,
    which is what a kernel without shared memory or synchronization computes.

    Raises:
        TypeError: an argument does not fit its parameter (CuPy would pass garbage).
        CompileError: the source is not valid C++ for the host.
    """
    params = _raw_params(source, name)
    if len(params) != len(args):
        raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
    typedef = source.split("typedef ", 1)[1].split(";", 1)[0].split()  # e.g. float T
    keep, unpack = [], []
    for k, (decl, a) in enumerate(zip(params, args)):
        ctype = decl.rsplit(" ", 1)[0].strip()
        if ctype.endswith("*"):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{name}: {decl} needs a device array, got {type(a)}")
            keep.append(a)
            unpack.append(f"({ctype}) _a[{k}]")
        else:
            if not isinstance(a, np.generic) or (
                    ctype.endswith("T") and a.dtype != np.dtype(
                        {"float": np.float32, "double": np.float64}[typedef[0]])):
                raise TypeError(f"{name}: {decl} needs a {typedef[0]} scalar, got {a!r}")
            buf = np.array(a)
            keep.append(buf)
            unpack.append(f"*({ctype}*) _a[{k}]")
    symbol = f"{name}_host"
    host = (
        _PRELUDE + _RAW_PRELUDE + source.replace('extern "C" __global__', "static")
        + f'extern "C" void {symbol}(ptrdiff_t _grid, void** _a, const ptrdiff_t* _s) {{\n'
        + "  blockDim.x = _s[0]; gridDim.x = _grid;\n"
        + "  for (long long b = 0; b < _grid; ++b) {\n    blockIdx.x = b;\n"
        + "    for (long long t = 0; t < _s[0]; ++t) {\n      threadIdx.x = t;\n"
        + f"      {name}(" + ", ".join(unpack) + ");\n    }\n  }\n}\n"
    )
    _call(_compile(host, symbol), grid, keep, [block])
