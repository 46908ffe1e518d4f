r"""Data-parallel training over MPI (mpi4py), when one machine is not enough.

Every rank holds the whole model and computes gradients on its shard of every batch; one
in-place ``Allreduce(MPI.IN_PLACE, buffer, op=SUM)`` per dtype buffer per step combines
them into the gradient of the whole batch, and every rank then applies the same fused
optimizer step, so the parameters stay identical. With shards of :math:`n_r` rows whose
local gradients are means :math:`g_r`, each rank contributes :math:`(n_r/N)\,g_r`, so the
sum is the mean over the :math:`N = \sum n_r` rows of the batch, also when shards differ
in size.

:func:`fastgd.fit` does all of this by itself when the process runs under ``mpiexec``
with more than one rank (launch with ``python -m mpi4py`` so that an exception on one rank
aborts the whole job instead of hanging it)::

    mpiexec -n 2 python -m mpi4py -m fastgd train

CuPy arrays are reduced through NCCL (``cupyx.distributed``, ranks launched by the same
``mpiexec``) when it is available, else staged through host memory and MPI.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["DataParallel", "world_size"]

_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


def world_size() -> int:
    """The number of MPI ranks this process was launched with (1 outside ``mpiexec``).

    Read from the launcher's environment, so it never imports mpi4py when not under MPI.
    """
    for var in _SIZE_VARS:
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("data-parallel training needs mpi4py: pip install 'fastgd[mpi]' "
                          "(mpi4py and the MPICH wheel), or mpi4py alone against your "
                          "cluster's MPI") from None
    return MPI


class DataParallel:
    """Keep one model's replicas identical across MPI ranks.

    Args:
        flat: the model's :class:`~fastgd.FlatParams` (``model.flat``).
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        threads: Numba threads per rank; default ``cores // ranks on this host`` (at
            least 1), so that ranks x threads <= cores. ``None`` leaves Numba's setting.

    Example:
        >>> import numpy as np, fastgd
        >>> from fastgd.models import LinearRegression
        >>> model = LinearRegression(2)
        >>> dp = DataParallel(model.flat)   # a world of one rank outside mpiexec
        >>> dp.rank, dp.size
        (0, 1)
    """

    def __init__(self, flat: Any, comm: Any = None, threads: int | str | None = "auto") -> None:
        MPI = _mpi()
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.flat = flat
        self._MPI = MPI
        self._nccl = None
        if threads == "auto":
            local = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
            threads = max(1, (os.cpu_count() or 1) // local)
        if threads is not None and "NUMBA_NUM_THREADS" not in os.environ:
            import numba

            numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))

    def broadcast_parameters(self, root: int = 0) -> None:
        """Copy rank ``root``'s parameters to every rank (all start identical)."""
        for buf in self.flat.buffers.values():
            self._bcast(buf, root)

    def shard(self, n: int) -> slice:
        """This rank's rows of a batch of ``n`` rows (contiguous, sizes differ by <= 1)."""
        q, r = divmod(n, self.size)
        start = self.rank * q + min(self.rank, r)
        return slice(start, start + q + (self.rank < r))

    def allreduce_gradients(self, n_local: int, n_total: int) -> None:
        """Turn every rank's local mean gradient into the batch's mean gradient, in place.

        Args:
            n_local: rows this rank's gradient averages over.
            n_total: rows of the whole batch (the sum of ``n_local`` over ranks).
        """
        weight = n_local / n_total if n_total else 0.0
        for buf in self.flat.grad_buffers.values():
            if buf.size:
                if weight != 1.0:
                    _backend.launch("reduce", "scale", (), weight, buf)
                self._allreduce(buf)

    def allreduce_scalar(self, value: float) -> float:
        """The sum of a Python float over ranks."""
        return float(self.comm.allreduce(float(value), op=self._MPI.SUM))

    def check_in_sync(self) -> None:
        """Raise RuntimeError unless every rank holds bit-identical parameters."""
        h = hashlib.sha256()
        for buf in self.flat.buffers.values():
            host = buf.get() if _backend.is_cupy(buf) else buf
            h.update(np.ascontiguousarray(host).tobytes())
        digests = self.comm.allgather(h.hexdigest())
        if len(set(digests)) != 1:
            bad = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RuntimeError(f"parameters differ between rank 0 and ranks {bad}")

    # -- transports ------------------------------------------------------------------------

    def _allreduce(self, buf: Any) -> None:
        if not _backend.is_cupy(buf):
            self.comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
            return
        nccl = self._nccl_comm(buf)
        if nccl is not None:
            nccl.all_reduce(buf, buf, op="sum")
            return
        host = buf.get()  # host-staged fallback
        self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
        buf.set(host)

    def _bcast(self, buf: Any, root: int) -> None:
        if not _backend.is_cupy(buf):
            self.comm.Bcast(buf, root=root)
            return
        host = buf.get()
        self.comm.Bcast(host, root=root)
        buf.set(host)

    def _nccl_comm(self, buf: Any) -> Any:
        if self._nccl is None:
            self._nccl = False
            try:
                from cupyx import distributed as cdist

                if cdist.NCCLBackend is not None:  # pragma: no cover - needs GPUs
                    self._nccl = cdist.init_process_group(self.size, self.rank, use_mpi=True)
            except Exception:
                self._nccl = False
        return self._nccl or None
