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

CuPy arrays are reduced through NCCL when every rank has it (``cupy.cuda.nccl``; the
``cupy-cuda12x`` wheel alone has no NCCL library: ``pip install 'fastgd[cuda12-nccl]'``
adds ``nvidia-nccl-cu12``), else, on every rank alike, staged through host memory and MPI.
The NCCL communicator is bootstrapped over the given communicator (its unique id broadcast
from its rank 0), so any mpi4py communicator works, not only ``COMM_WORLD``. Each rank
needs a GPU of its own: :func:`use_local_gpu` selects the GPU of the rank's place on its
host, to be called before the model's arrays are made; ranks on one host sharing a GPU are
refused with an error naming them (NCCL would fail with "Duplicate GPU").
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["DataParallel", "local_rank", "use_local_gpu", "world_size"]

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


def local_rank(comm: Any = None) -> int:
    """This rank's index among the ranks of ``comm`` on the same host (0 outside MPI).

    Args:
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
    """
    MPI = _mpi()
    comm = comm if comm is not None else MPI.COMM_WORLD
    return int(comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank())


def use_local_gpu(comm: Any = None) -> int:
    """Make GPU ``local_rank % GPUs on the host`` this process's current CuPy device.

    Call it before the model's CuPy arrays are made: each rank then holds its replica on
    a GPU of its own, as NCCL needs.

    Args:
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).

    Returns:
        The device id selected.
    """
    cp = _backend._cupy()
    device = local_rank(comm) % cp.cuda.runtime.getDeviceCount()
    cp.cuda.Device(device).use()
    return device


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
        self._nccl: Any = None  # None: not decided yet; False: host-staged; else NCCL's
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
            from cupy.cuda import nccl as lib

            with _backend.on_device_of(buf):
                stream = _backend._cupy().cuda.get_current_stream()
                nccl.allReduce(buf.data.ptr, buf.data.ptr, buf.size,
                               getattr(lib, _NCCL_TYPES[buf.dtype.str]), lib.NCCL_SUM,
                               stream.ptr)
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

    def _check_own_gpus(self, device: int) -> None:
        """Raise on every rank if two ranks on one host hold their replicas on one GPU."""
        places = self.comm.allgather((self._MPI.Get_processor_name(), int(device)))
        seen: dict[tuple[str, int], int] = {}
        for r, place in enumerate(places):
            if place in seen:
                raise RuntimeError(
                    f"ranks {seen[place]} and {r} both hold their parameters on GPU "
                    f"{place[1]} of host {place[0]!r}: each rank needs a GPU of its own; "
                    "call fastgd.distributed.use_local_gpu() before making the model's "
                    "arrays")
            seen[place] = r

    def _nccl_comm(self, buf: Any) -> Any:
        """NCCL's communicator for CuPy buffers, or None: decided alike on every rank.

        A collective call: every rank reaches it at its first CuPy allreduce. NCCL is used
        only if every rank can load it (agreed by an MPI allreduce, so no rank waits in
        NCCL's set-up for ranks that fell back); its unique id comes from rank 0 of our
        communicator.
        """
        if self._nccl is None:
            self._check_own_gpus(buf.device.id)
            try:
                from cupy.cuda import nccl as lib

                ok = bool(lib.available)
            except Exception:
                lib, ok = None, False
            if self.comm.allreduce(int(ok), op=self._MPI.MIN) == 0:
                self._nccl = False
            else:
                uid = self.comm.bcast(lib.get_unique_id() if self.rank == 0 else None, root=0)
                with _backend.on_device_of(buf):
                    self._nccl = lib.NcclCommunicator(self.size, uid, self.rank)
        return self._nccl or None


#: NumPy dtype -> the name of NCCL's data type constant in ``cupy.cuda.nccl``
_NCCL_TYPES = {"<f4": "NCCL_FLOAT32", "<f8": "NCCL_FLOAT64"}
