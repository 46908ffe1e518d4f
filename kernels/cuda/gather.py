"""Row gather: CUDA twin of kernels/cpu/gather.py (CuPy's take, one launch)."""

import cupy as cp

from ._elementwise import cupy_call


@cupy_call
def gather_rows(src, idx, ahead, dst):
    """dst[r, :] <- src[idx[r], :] (2-D arrays; a row per sample; ``ahead``, the CPU
    kernel's rows to prefetch, unused)."""
    cp.take(src, idx, axis=0, out=dst)
