"""The compile policy of every CPU kernel, in one place.

A rule module writes its loop body once, inside a *factory* whose arguments are the
variant flags (``nesterov``, ``amsgrad``, ``centered``, ...). The flags are closure
constants, so Numba folds the branches they guard away and each variant is its own
specialization. :func:`rule` turns a factory into a getter that compiles a variant the
first time it is asked for, once as a serial loop and once as a ``prange`` loop, and
memoizes both. Hyperparameters are never closure constants: they are kernel arguments, so
changing a learning rate never recompiles anything.

Compile options, for every kernel:

* ``cache=True``: the machine code is written to Numba's disk cache (``__pycache__`` beside
  this file, or ``NUMBA_CACHE_DIR``) and reloaded by later processes.
* ``error_model="numpy"``: no Python division checks, which would block vectorization.
* no ``fastmath``: its no-NaN/no-inf assumptions would break NaN propagation.
* ``nogil=True``: callers may step several optimizers from their own threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from numba import njit
from numba.extending import overload, register_jitable

#: Element counts from which the ``prange`` (two-thread) kernels beat the serial ones, whose
#: call costs ~2 us less than waking the thread pool. Measured on the 2-core development
#: machine with ``bench/test_threshold.py`` (README, "Serial and parallel kernels"): rules
#: with a square root or division per element cross over near 16k elements, the light
#: ones (SGD, Lion, axpy) near 32k. ``FASTGD_PARALLEL_THRESHOLD`` overrides both.
HEAVY_THRESHOLD = 16_384
LIGHT_THRESHOLD = 32_768
#: For kernels that run between BLAS calls (the models' elementwise kernels): always serial,
#: since OpenBLAS's spinning worker threads and Numba's contend for the cores
#: (fastgd.serial_kernels documents the measurement).
NEVER_PARALLEL = 2**62
_OVERRIDE = os.environ.get("FASTGD_PARALLEL_THRESHOLD")

_JIT_OPTIONS: dict[str, Any] = {"cache": True, "error_model": "numpy", "nogil": True}


def as_dtype_of(x: float, like: Any) -> Any:
    """Convert the scalar ``x`` to the element type of the array ``like``.

    Kernels call it once per scalar, before the loop: a float64 scalar mixed into a
    float32 loop would make Numba compute in float64 and stop vectorizing.
    """
    return like.dtype.type(x)


@overload(as_dtype_of, inline="always")
def _as_dtype_of(x, like):  # pragma: no cover - runs inside Numba's type inference
    dtype = like.dtype

    def impl(x, like):
        return dtype(x)

    return impl


@register_jitable(inline="always")
def averaged(a: Any, pn: Any, w: Any, w1: Any, div: Any) -> Any:
    """The weight average ``a`` moved towards the new parameter value ``pn``.

    The optional stream of the update kernels (variant flag ``average``) and of
    ``kernels/cpu/average.py``: ``div != 0`` is SWA's running mean, ``a + (pn - a) / div``
    with ``div`` the count of averaged values (1 copies ``pn`` into a zero ``a``);
    otherwise an exponential moving average by torch's ``lerp`` with weight ``w``
    (``w1 = 1 - w``): ``a + w (pn - a)`` for ``w < 0.5``, else ``pn - (pn - a) w1``.
    All four scalars are of the array's dtype.
    """
    d = pn - a
    if div != 0:
        return a + d / div
    if w < 0.5:
        return a + w * d
    return pn - d * w1


class KernelRule:
    """A rule's loop body as a family of compiled variants.

    Args:
        factory: ``factory(**flags)`` returns the loop body, a plain Python function that
            loops with ``numba.prange``.
        threshold: arrays of at least this many elements take the parallel build.
        fastmath: specific LLVM fast-math flags, for reductions only (``{"reassoc"}`` lets
            a float sum vectorize); never the no-NaN/no-inf ones.
    """

    def __init__(self, factory: Callable[..., Callable[..., None]], threshold: int,
                 fastmath: frozenset[str] | None = None) -> None:
        self._factory = factory
        self._options = dict(_JIT_OPTIONS, **({"fastmath": set(fastmath)} if fastmath else {}))
        self.threshold = (int(_OVERRIDE) if _OVERRIDE and threshold != NEVER_PARALLEL
                          else threshold)
        self._compiled: dict[tuple[Any, ...], Any] = {}
        self.__name__ = factory.__name__
        self.__doc__ = factory.__doc__

    def variant(self, parallel: bool, flags: tuple[tuple[str, bool], ...] = ()) -> Any:
        """The compiled dispatcher for ``flags``, serial or parallel (built on first use).

        Args:
            parallel: the ``prange`` build (multi-threaded) rather than the serial one.
            flags: the variant flags as ``(name, value)`` pairs sorted by name.
        """
        key = (parallel, flags)
        dispatcher = self._compiled.get(key)
        if dispatcher is None:
            body = self._factory(**dict(flags))
            # A distinct name per variant gives each its own disk-cache index, so the
            # serial and parallel builds of one body never overwrite each other.
            suffix = "".join(f"_{k}{int(v)}" for k, v in flags)
            body.__name__ = body.__qualname__ = (
                f"{self.__name__}{suffix}_{'parallel' if parallel else 'serial'}"
            )
            dispatcher = njit(parallel=parallel, **self._options)(body)
            self._compiled[key] = dispatcher
        return dispatcher



def rule(threshold: int, fastmath: frozenset[str] | None = None
         ) -> Callable[[Callable[..., Callable[..., None]]], KernelRule]:
    """Decorator turning a body factory into a :class:`KernelRule`.

    Args:
        threshold: :data:`HEAVY_THRESHOLD` or :data:`LIGHT_THRESHOLD`, by the work the
            rule does per element.
        fastmath: see :class:`KernelRule`.
    """
    return lambda factory: KernelRule(factory, threshold, fastmath)
