"""BLAS threads around fastgd's own parallel work, through threadpoolctl.

OpenBLAS's worker threads keep spinning for a while after each call, and Numba's parallel
kernels want the same cores: interleaved, the two pools slow each other down (an L-BFGS
step whose closure calls NumPy's BLAS ran 2x slower here than with BLAS on one thread).
:func:`blas_threads` limits BLAS for a block and restores it after. threadpoolctl is
scikit-learn's own tool for this, and finds every BLAS loaded in the process (NumPy's,
SciPy's, torch's) without fastgd knowing which.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["blas_threads", "kernel_threads"]

_lock = threading.Lock()
_controller: Any = None
_modules_seen = -1


def _blas_controller() -> Any:
    """A threadpoolctl controller of the libraries loaded now.

    Finding them costs ~0.15 ms, so the controller is kept until a module has been
    imported since (new BLAS libraries arrive with imports, e.g. torch's).
    """
    global _controller, _modules_seen
    with _lock:
        if _controller is None or len(sys.modules) != _modules_seen:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
            _modules_seen = len(sys.modules)
        return _controller


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Within the block, BLAS libraries use at most ``n`` threads (None: unchanged).

    Costs ~10 us per block once the libraries have been found.
    """
    if n is None:
        yield
        return
    with _blas_controller().limit(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def kernel_threads(n: int) -> Iterator[None]:
    """Within the block, fastgd's parallel kernels run on ``n`` threads (1: serial builds).

    ``n`` is capped at the threads Numba started with. Numba's thread count is the calling
    thread's own, and is restored after the block.
    """
    from fastgd import _backend

    if n <= 1:
        with _backend.serial_kernels():
            yield
        return
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(old)
