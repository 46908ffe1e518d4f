"""Run under ``mpiexec``: train one model with fastgd.fit and save rank 0's result.

Usage: python -m mpi4py tests/mpi_worker.py OUT.npz MODEL OPTIMIZER DTYPE N
[raise | uneven | short-batches]
"""

from __future__ import annotations

import sys

import numpy as np

import fastgd
from fastgd.models import MLP, LogisticRegression


def main() -> None:
    out, model_kind, opt_name, dtype, n = sys.argv[1:6]
    dtype, n = np.dtype(dtype), int(n)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6)).astype(dtype)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 0.5).astype(np.int64)
    if model_kind == "logistic":
        model = LogisticRegression(6, 3, dtype=dtype, seed=1)
    else:
        model = MLP([6, 16, 3], output="multiclass", dtype=dtype, seed=1)
    opts = {"sgd": lambda f: fastgd.SGD(f, lr=0.1),
            "momentum": lambda f: fastgd.SGD(f, lr=0.05, momentum=0.9),
            "adam": lambda f: fastgd.Adam(f, lr=0.01)}
    opt = opts[opt_name](model.flat)
    mode = sys.argv[6] if len(sys.argv) > 6 else ""
    rank = 0
    if mode:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    if mode == "raise" and rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    if mode == "uneven" and rank == 1:  # another data set on rank 1: fewer rows
        X, y = X[:-40], y[:-40]
    if mode == "short-batches":  # rank 1's batches() ends one batch early
        def batches(epoch):
            stop = len(X) - (32 if rank == 1 else 0)
            return ((X[i:i + 32], y[i:i + 32]) for i in range(0, stop, 32))

        fastgd.fit(model, opt, batches=batches, epochs=2, progress=False)
        return
    hist = fastgd.fit(model, opt, X, y, epochs=3, batch_size=32, seed=5, progress=False)
    from fastgd.distributed import world_size

    rank = 0
    if world_size() > 1:
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    if rank == 0:
        np.savez(out, params=model.flat.buffers[dtype], loss=np.asarray(hist["loss"]))


if __name__ == "__main__":
    main()
