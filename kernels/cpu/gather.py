"""Row gather for the mini-batches of the training loop and the estimators (not an optimizer)."""

from numba import prange

from ._jit import LIGHT_THRESHOLD, rule


@rule(LIGHT_THRESHOLD)
def gather_rows():
    """dst[r, :] <- src[idx[r], :] (2-D arrays; a row per sample)."""

    def gather_rows(src, idx, dst):
        cols = dst.shape[1]
        for r in prange(idx.size):
            i = idx[r]
            for c in range(cols):
                dst[r, c] = src[i, c]

    return gather_rows
