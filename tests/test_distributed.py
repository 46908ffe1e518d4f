"""Data-parallel training under mpiexec: N ranks reach what 1 process reaches."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
    "mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
WORKER = str(Path(__file__).with_name("mpi_worker.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "PYTHONPATH": str(Path(__file__).parents[1])}


def _run(ranks, out, *args, timeout=120):
    cmd = [sys.executable, "-m", "mpi4py", WORKER, str(out), *args]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize(("model", "opt", "dtype"), [
    ("logistic", "sgd", "float64"), ("logistic", "momentum", "float64"),
    ("logistic", "adam", "float32"), ("mlp", "sgd", "float32"),
    ("mlp", "momentum", "float64"), ("mlp", "adam", "float64"),
])
def test_ranks_reach_the_single_process_parameters(tmp_path, ranks, model, opt, dtype):
    single, multi = tmp_path / "one.npz", tmp_path / "many.npz"
    for n_ranks, out in ((1, single), (ranks, multi)):
        res = _run(n_ranks, out, model, opt, dtype, "101")  # 101 rows: uneven shards
        assert res.returncode == 0, res.stderr[-3000:]
    a, b = np.load(single), np.load(multi)
    tol = 1e-10 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(b["params"], a["params"], rtol=tol, atol=tol)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=tol)


def test_a_failing_rank_aborts_the_job_quickly(tmp_path):
    t0 = time.perf_counter()
    res = _run(2, tmp_path / "x.npz", "mlp", "adam", "float64", "50", "raise", timeout=60)
    assert res.returncode != 0
    assert "rank 1 fails on purpose" in res.stderr
    assert time.perf_counter() - t0 < 30


def test_fastgd_train_under_mpiexec_reports_once(tmp_path):
    pytest.importorskip("sklearn")
    ckpt = tmp_path / "c.npz"
    res = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", "-m", "fastgd",
                          "train", "--epochs", "2", "--no-progress", "--save", str(ckpt)],
                         capture_output=True, text=True, timeout=180, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("optimizer   train loss") == 1
    assert ckpt.exists()


def test_world_size_reads_the_launcher_environment(monkeypatch):
    from fastgd.distributed import world_size

    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert world_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert world_size() == 4


@pytest.mark.parametrize(("mode", "message"), [
    ("uneven", "the MPI ranks disagree on fit's data and arguments: rows: rank 0 has 101, "
               "rank 1 has 61"),
    ("short-batches", "MPI ranks [1] have no batch 4 of epoch 1 while ranks [0] do"),
])
def test_ranks_with_different_data_end_with_an_error_instead_of_hanging(tmp_path, mode,
                                                                          message):
    t0 = time.perf_counter()
    res = _run(2, tmp_path / "x.npz", "mlp", "adam", "float64", "101", mode, timeout=90)
    assert res.returncode != 0
    assert message in res.stderr
    assert time.perf_counter() - t0 < 60


class _FakeComm:
    """The collective calls of DataParallel's NCCL set-up, answered as other ranks would."""

    def __init__(self, places, all_have_nccl, rank=0):
        self.places, self.all_have_nccl, self.rank = places, all_have_nccl, rank
        self.calls = []

    def allgather(self, value):
        self.calls.append(("allgather", value))
        assert value[1] == self.places[self.rank][1]  # this rank's GPU, as we declared it
        return list(self.places)

    def allreduce(self, value, op=None):
        self.calls.append(("allreduce", value))
        return min(value, int(self.all_have_nccl))

    def bcast(self, value, root=0):
        self.calls.append(("bcast", value))
        return value if self.rank == root else b"rank-0-id"


class _FakeNccl:
    available = True
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0

    def __init__(self):
        self.made = []

    def get_unique_id(self):
        return b"rank-0-id"

    def NcclCommunicator(self, size, uid, rank):
        self.made.append((size, uid, rank))
        return ("communicator", size, uid, rank)


class _DeviceBuf:
    class device:
        id = 1


def _nccl_setup(monkeypatch, comm, lib):
    import cupy.cuda

    from fastgd import _backend
    from fastgd.distributed import DataParallel
    from fastgd.models import LinearRegression

    dp = DataParallel(LinearRegression(2).flat, threads=None)
    dp.comm, dp.size, dp.rank = comm, len(comm.places), comm.rank
    monkeypatch.setattr(cupy.cuda, "nccl", lib, raising=False)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", lib)
    monkeypatch.setattr(_backend, "on_device_of", lambda a: __import__("contextlib")
                        .nullcontext())
    return dp


def test_ranks_sharing_a_gpu_are_refused_before_nccl_starts(monkeypatch):
    pytest.importorskip("cupy")
    lib = _FakeNccl()
    comm = _FakeComm([("node", 1), ("node", 1)], all_have_nccl=True)
    dp = _nccl_setup(monkeypatch, comm, lib)
    with pytest.raises(RuntimeError, match=r"ranks 0 and 1 both hold their parameters on "
                       r"GPU 1 of host 'node'.*use_local_gpu"):
        dp._nccl_comm(_DeviceBuf())
    assert lib.made == [] and dp._nccl is None  # NCCL never started; asked again next time


@pytest.mark.parametrize(("places", "all_have", "made"), [
    ([("node", 1), ("node", 0)], True, [(2, b"rank-0-id", 0)]),     # NCCL on every rank
    ([("a", 1), ("b", 1)], True, [(2, b"rank-0-id", 0)]),           # one GPU per host
    ([("node", 1), ("node", 0)], False, []),                        # a rank lacks NCCL
])
def test_every_rank_takes_nccl_or_every_rank_stages_through_the_host(monkeypatch, places,
                                                                     all_have, made):
    pytest.importorskip("cupy")
    lib = _FakeNccl()
    comm = _FakeComm(places, all_have_nccl=all_have)
    dp = _nccl_setup(monkeypatch, comm, lib)
    got = dp._nccl_comm(_DeviceBuf())
    assert lib.made == made
    assert (got is None) == (not made)
    assert ("allreduce", 1) in comm.calls  # the agreement is asked of every rank
    # the id travels over our communicator, from its rank 0
    assert (("bcast", b"rank-0-id") in comm.calls) == bool(made)
    assert dp._nccl_comm(_DeviceBuf()) is got and len(lib.made) == len(made)  # decided once


def test_a_rank_without_nccl_says_so_to_the_others(monkeypatch):
    pytest.importorskip("cupy")
    lib = _FakeNccl()
    lib.available = False
    comm = _FakeComm([("node", 0), ("node", 1)], all_have_nccl=True, rank=1)
    dp = _nccl_setup(monkeypatch, comm, lib)
    assert dp._nccl_comm(_DeviceBuf()) is None
    assert ("allreduce", 0) in comm.calls and lib.made == []


def test_local_rank_is_the_place_on_the_host():
    from fastgd.distributed import local_rank

    assert local_rank() == 0  # one process
