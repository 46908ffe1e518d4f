"""Data-parallel step split (compute / allreduce / update) for 1 and 2 ranks.

Each case launches ``mpiexec -n N python -m mpi4py -m fastgd bench --distributed`` (the
ranks must be separate processes) and times the whole run with pytest-benchmark; the
per-step split that rank 0 prints is kept in ``extra_info`` and echoed in the summary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
    "mpiexec")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
@pytest.mark.parametrize("ranks", [1, 2])
def test_data_parallel_step(benchmark, ranks):
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m", "fastgd", "bench",
           "--distributed"]
    out = {}

    def run():
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
        assert res.returncode == 0, res.stderr[-2000:]
        out["text"] = res.stdout

    benchmark.pedantic(run, rounds=1, iterations=1)
    text = out["text"]
    print(text)
    for key in ("compute", "allreduce", "update", "step"):
        m = re.search(rf"{key}\s+([\d.]+) (us|ms)", text)
        assert m, text
        benchmark.extra_info[f"{key}_ms"] = float(m.group(1)) / (1000 if m.group(2) == "us"
                                                                  else 1)
    benchmark.extra_info["ranks"] = ranks
