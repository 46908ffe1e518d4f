"""NumPy's own BLAS, called from compiled code the way ``np.matmul`` calls it.

The MLP's compiled pass (``batch.py``) must compute each product with the same bits as
the Python pass's ``np.matmul``. Numba's ``np.dot`` calls SciPy's BLAS, a different
OpenBLAS build: here (NumPy's 0.3.31, SciPy's 0.3.30) 91 of 14,739 float64 products of
shapes between 2 and 256 differed in the last bits (64 x 100 @ 100 x 200 among them), and
single-precision matrix-vector products with 6 or 7 terms per sum differed too. So
:func:`matmul` calls NumPy's library itself, through the ``cblas_*`` entry points whose
addresses :func:`addresses` finds, with the routine and arguments that :func:`plan` picks
as NumPy's matmul loop (``numpy/_core/src/umath/matmul.c.src``) does: ``gemm`` for a matrix
product, ``gemv`` where one side is a single row or column, a float64 sum around ``dot``
for a 1 x 1 result, and NumPy's own loop where the inner dimension is 1. The plan is made
in Python once per layout (a workspace's), so the compiled part is small: one
specialization per dtype for every product of a driver (0.8 s to compile here, alone, and
disk-cached with the driver; routing by layouts inside compiled code took ~1 s for each
of the three operand layouts). One library also means one thread pool: the calls obey
``threadpoolctl`` limits on NumPy's BLAS, as ``np.matmul``'s do.

The addresses are arguments of the compiled functions, not constants in them, so Numba's
disk cache stays valid across processes (the library loads at another address each time).
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, register_jitable

__all__ = ["addresses", "matmul", "plan"]

#: The routines :func:`matmul` calls, per dtype, in the order of :func:`addresses`' tuples.
ROUTINES = ("gemm", "gemv", "dot")

# CBLAS's enumerations
_ROW_MAJOR, _COL_MAJOR, _NO_TRANS, _TRANS = 101, 102, 111, 112
_BLAS_MAXSIZE = 2**63 - 2  # NumPy's limit with a 64-bit-integer BLAS


def _numpy_openblas() -> Any:
    """NumPy's bundled OpenBLAS (scipy-openblas64, ILP64) as a ctypes library, or None.

    Found among the libraries ``threadpoolctl`` sees loaded: the OpenBLAS inside NumPy's
    installation (``numpy.libs`` or ``numpy/.dylibs``). A NumPy built against another
    BLAS (MKL, Accelerate, a system OpenBLAS) has none, and the MLP keeps its Python pass.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency of fastgd
        return None
    site = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    homes = tuple(os.path.join(site, name) + os.sep for name in ("numpy", "numpy.libs"))
    for lib in ThreadpoolController().lib_controllers:
        path = os.path.realpath(lib.filepath)
        if lib.internal_api == "openblas" and path.startswith(homes):
            return ctypes.CDLL(path)
    return None


@functools.cache
def addresses() -> dict[np.dtype, tuple[int, int, int]] | None:
    """Per dtype (float32, float64), the addresses of NumPy's ``cblas_?gemm``, ``?gemv``,
    ``?dot``; None where NumPy's BLAS is not a scipy-openblas64 library found here.
    """
    lib = _numpy_openblas()
    if lib is None:
        return None
    out = {}
    for dtype, prefix in ((np.dtype(np.float32), "s"), (np.dtype(np.float64), "d")):
        try:
            out[dtype] = tuple(
                ctypes.cast(getattr(lib, f"scipy_cblas_{prefix}{name}64_"), ctypes.c_void_p).value
                for name in ROUTINES)
        except AttributeError:  # another naming: not the library this module knows
            return None
    return out  # type: ignore[return-value]


# --- the calls (alpha 1, beta 0, as NumPy's) -------------------------------------------------

def _call(context: Any, builder: Any, signature: Any, args: Any, kinds: str,
          returns: bool = False) -> Any:
    """Call the routine at address ``args[0]`` with the other arguments, by ``kinds``.

    One letter per argument of the C routine: ``e`` a CBLAS enumeration (int) from the next
    argument, ``i`` a 64-bit integer from the next argument, ``a`` the next argument's (an
    array's) data pointer, ``1`` / ``0`` the constants 1 and 0 in the arrays' precision.
    ``returns``: the routine returns that precision (``dot``), else nothing.
    """
    tys = signature.args
    dtype = next(t.dtype for t in tys if isinstance(t, types.Array))
    fl = context.get_value_type(dtype)
    kinds_ir = {"e": ir.IntType(32), "i": ir.IntType(64), "a": fl.as_pointer(), "1": fl,
                "0": fl}
    fnty = ir.FunctionType(fl if returns else ir.VoidType(), [kinds_ir[k] for k in kinds])
    values, at = [], 1
    for kind in kinds:
        if kind in "ei":
            values.append(context.cast(builder, args[at], tys[at],
                                       types.int32 if kind == "e" else types.int64))
        elif kind == "a":
            values.append(context.make_array(tys[at])(context, builder, args[at]).data)
        else:
            values.append(ir.Constant(fl, float(kind)))
            continue
        at += 1
    result = builder.call(builder.inttoptr(args[0], fnty.as_pointer()), values)
    return result if returns else context.get_dummy_value()


@intrinsic
def _gemm(typingctx: Any, addr: Any, order: Any, trans_a: Any, trans_b: Any, m: Any, n: Any,
          k: Any, a: Any, lda: Any, b: Any, ldb: Any, c: Any, ldc: Any
          ) -> Any:  # pragma: no cover - Numba typing
    """``cblas_?gemm(order, trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)``."""
    sig = types.void(addr, order, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    return sig, lambda context, builder, signature, args: _call(
        context, builder, signature, args, "eeeiii1aiai0ai")


@intrinsic
def _gemv(typingctx: Any, addr: Any, order: Any, trans: Any, m: Any, n: Any, a: Any, lda: Any,
          x: Any, incx: Any, y: Any, incy: Any) -> Any:  # pragma: no cover - Numba typing
    """``cblas_?gemv(order, trans, m, n, 1, a, lda, x, incx, 0, y, incy)``."""
    sig = types.void(addr, order, trans, m, n, a, lda, x, incx, y, incy)
    return sig, lambda context, builder, signature, args: _call(
        context, builder, signature, args, "eeii1aiai0ai")


@intrinsic
def _dot(typingctx: Any, addr: Any, n: Any, x: Any, incx: Any, y: Any, incy: Any
         ) -> Any:  # pragma: no cover - Numba typing
    """``cblas_?dot(n, x, incx, y, incy)``, in the arrays' precision."""
    sig = x.dtype(addr, n, x, incx, y, incy)
    return sig, lambda context, builder, signature, args: _call(
        context, builder, signature, args, "iaiai", returns=True)


# --- NumPy's matmul loop, planned in Python, run compiled ------------------------------------

#: :func:`plan`'s routines, its first entry. The others: order, trans_a (gemv: its one
#: transposition), trans_b, m, n, k, lda, ldb, ldc, incx, incy, and the element strides of
#: ``a`` (2), ``b`` (2) and ``out`` (2) for the loop.
LOOP, GEMM, GEMV_A, GEMV_B, DOT = range(5)


def _blasable2d(stride1: int, stride2: int, d1: int, d2: int, size: int) -> bool:
    """NumPy's ``is_blasable2d``: unit inner stride, outer stride a whole number >= d2."""
    return (stride2 == size and stride1 % size == 0 and d2 <= stride1 // size
            <= _BLAS_MAXSIZE)


def _gemv_plan(routine: int, m: int, n: int, a_m: int, a_n: int, x_n: int, y_m: int,
               size: int) -> list[int]:
    """NumPy's ``gemv`` helper: ``y <- A x`` for the ``(m, n)`` matrix of byte strides
    ``(a_m, a_n)``: ``cblas_?gemv(order, CblasTrans, n, m, 1, A, lda, x, incx, 0, y, incy)``.
    """
    if _blasable2d(a_m, a_n, m, n, size):
        order, lda = _COL_MAJOR, a_m // size
    else:
        order, lda = _ROW_MAJOR, a_n // size
    return [routine, order, _TRANS, 0, n, m, 0, lda, 0, 0, x_n // size, y_m // size]


def plan(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """How ``np.matmul(a, b, out=out)`` computes its product, for :func:`matmul`.

    NumPy's choice, case by case (``matmul.c.src``): an empty dimension, or an inner
    dimension of 1 with a single row or column (and an outer product), by its own loop
    (each element 0, plus its products in order); a 1 x 1 result by ``dot`` (summed into a
    float64 0 and rounded back, as NumPy's ``dot`` loop); one row or one column by
    ``gemv`` on the matrix side (a row ``a``: ``b^T`` times it); otherwise ``gemm``, each
    operand transposed or not by its strides. Refused (``ValueError``): the two cases where
    NumPy would compute otherwise than with these routines on these arrays: a matrix times
    its own transpose (``syrk``) and a layout it copies first. A plan holds only shapes and
    strides: it serves every call on arrays laid out as these.
    """
    size = out.itemsize
    (dm, dn), dp = a.shape, b.shape[1]
    (is1_m, is1_n), (is2_n, is2_p), (os_m, os_p) = a.strides, b.strides, out.strides
    loop = [LOOP, 0, 0, 0, dm, dp, dn, 0, 0, 0, 0, 0]
    i1 = _blasable2d(is1_m, is1_n, dm, dn, size) or _blasable2d(is1_n, is1_m, dn, dm, size)
    i2 = _blasable2d(is2_n, is2_p, dn, dp, size) or _blasable2d(is2_p, is2_n, dp, dn, size)
    if 0 in (dm, dn, dp):
        head = loop
    elif 1 in (dm, dn, dp):
        if dm == 1 and dp == 1:  # row @ column
            head = [DOT, 0, 0, 0, dn, 0, 0, 0, 0, 0, is1_n // size, is2_n // size]
        elif dn == 1:  # 1 x 1 @ vector, vector @ 1 x 1, column @ row
            head = loop
        elif dm == 1 and i2 and _blasable2d(is1_n, size, dn, 1, size):  # vector @ matrix
            head = _gemv_plan(GEMV_B, dp, dn, is2_p, is2_n, is1_n, os_p, size)
        elif dp == 1 and i1 and _blasable2d(is2_n, size, dn, 1, size):  # matrix @ vector
            head = _gemv_plan(GEMV_A, dm, dn, is1_m, is1_n, is2_n, os_m, size)
        else:
            head = loop
    else:
        if not (i1 and i2 and _blasable2d(os_m, os_p, dm, dp, size)) or abs(os_m) < abs(os_p):
            raise ValueError("a layout np.matmul copies or transposes first")
        if a.__array_interface__["data"][0] == b.__array_interface__["data"][0]:
            raise ValueError("a matrix times itself (np.matmul's syrk case)")
        if _blasable2d(is1_m, is1_n, dm, dn, size):
            trans_a, lda = _NO_TRANS, is1_m // size
        else:
            trans_a, lda = _TRANS, is1_n // size
        if _blasable2d(is2_n, is2_p, dn, dp, size):
            trans_b, ldb = _NO_TRANS, is2_n // size
        else:
            trans_b, ldb = _TRANS, is2_p // size
        head = [GEMM, _ROW_MAJOR, trans_a, trans_b, dm, dp, dn, lda, ldb, os_m // size, 0, 0]
    strides = [s // size for s in (is1_m, is1_n, is2_n, is2_p, os_m, os_p)]
    return np.array(head + strides, np.int64)


@register_jitable
def matmul(blas, plan, a, b, out):  # pragma: no cover - compiled
    """``out <- a b`` as ``np.matmul`` computes it, by :func:`plan`'s ``plan``.

    Args:
        blas: ``addresses()[dtype]``: NumPy's ``gemm``, ``gemv`` and ``dot``.
        plan: :func:`plan` of the product's arrays (views: ``A.T``, ``W.T``).
        a, b, out: C-contiguous arrays whose data the product's operands and result view
            (``A`` for ``A.T``): only their data pointers and flat elements are used.
    """
    routine = plan[0]
    if routine == GEMM:
        _gemm(blas[0], plan[1], plan[2], plan[3], plan[4], plan[5], plan[6], a, plan[7], b,
              plan[8], out, plan[9])
    elif routine == GEMV_A:
        _gemv(blas[1], plan[1], plan[2], plan[4], plan[5], a, plan[7], b, plan[10], out,
              plan[11])
    elif routine == GEMV_B:
        _gemv(blas[1], plan[1], plan[2], plan[4], plan[5], b, plan[7], a, plan[10], out,
              plan[11])
    elif routine == DOT:  # NumPy's dot loop sums in float64
        out.reshape(out.size)[0] = 0.0 + _dot(blas[2], plan[4], a, plan[10], b, plan[11])
    else:
        fa, fb, fo = a.reshape(a.size), b.reshape(b.size), out.reshape(out.size)
        zero = fo.dtype.type(0)
        for i in range(plan[4]):
            for j in range(plan[5]):
                acc = zero
                for k in range(plan[6]):
                    acc += fa[i * plan[12] + k * plan[13]] * fb[k * plan[14] + j * plan[15]]
                fo[i * plan[16] + j * plan[17]] = acc
