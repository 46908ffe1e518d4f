"""Row gather for the mini-batches of the training loop and the estimators (not an optimizer)."""

from numba import prange

from ._jit import HEAVY_THRESHOLD, rule


#: Two threads from 16384 elements: a batch from an array beyond the caches waits on memory
#: row by row (200 x 100 float64 from 122 MB: 21.9 us on one thread, 13.5 us on two here),
#: one from a cached array breaks even there (256 x 64 from 1 MB: 4.8 and 4.5 us) and
#: loses below it (200 x 64: 3.8 and 4.0 us).
@rule(HEAVY_THRESHOLD)
def gather_rows():
    """dst[r, :] <- src[idx[r], :] (2-D arrays; a row per sample)."""

    def gather_rows(src, idx, dst):
        cols = dst.shape[1]
        for r in prange(idx.size):
            i = idx[r]
            for c in range(cols):
                dst[r, c] = src[i, c]

    return gather_rows
