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
