"""Row gather for the mini-batches of the training loop and the estimators (not an optimizer)."""

from typing import Any

from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._jit import LIGHT_THRESHOLD, rule

#: How many rows ahead of the copy the gather asks for its source rows: the rows of a
#: shuffled batch lie anywhere in the data, so each copy would wait for memory otherwise.
PREFETCH_ROWS = 8


@intrinsic
def _prefetch(typingctx: Any, arr: Any, i: Any, j: Any) -> Any:  # pragma: no cover - typing
    """Ask the CPU to bring ``arr[i, j]``'s cache line in (LLVM's prefetch: never faults)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2
            and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(arr)(context, builder, args[0])
        inds = [context.cast(builder, v, t, types.intp)
                for v, t in zip(args[1:], signature.args[1:])]
        ptr = cgutils.get_item_pointer(context, builder, arr, ary, inds, wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        # read, high temporal locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@rule(LIGHT_THRESHOLD)
def gather_rows():
    """dst[r, :] <- src[idx[r], :] (2-D arrays; a row per sample).

    Each row's source is prefetched :data:`PREFETCH_ROWS` rows ahead (every cache line of
    it): a shuffled batch's rows are scattered over the data, and copying them one after
    another otherwise waits on memory for each (the same copy either way).
    """

    def gather_rows(src, idx, dst):
        cols = dst.shape[1]
        n = idx.size
        line = max(1, 64 // src.itemsize)
        for r in prange(n):
            if r + PREFETCH_ROWS < n:
                ahead = idx[r + PREFETCH_ROWS]
                for c in range(0, cols, line):
                    _prefetch(src, ahead, c)
            i = idx[r]
            for c in range(cols):
                dst[r, c] = src[i, c]

    return gather_rows
