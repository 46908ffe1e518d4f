"""bench/gpu_check.sh, the one prepared run on a GPU machine, runs as written.

A GPU run may be short, offline and on a Python with no plain ``python`` command: the script
must call each step with the chosen interpreter, keep each step within its time budget, and
report a suite that only skipped (CuPy found no GPU) as a failure. Checked here with a
stand-in interpreter that logs its calls.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(tmp_path: Path, summary: str, budgets: str | None = None, sleep: str = ""
         ) -> tuple[int, list[str]]:
    log = tmp_path / "calls.log"
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{sleep}\necho "{summary}"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    if budgets is not None:
        env["FASTGD_GPU_BUDGETS"] = budgets
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, log.read_text().splitlines()


def test_every_step_runs_on_the_chosen_interpreter(tmp_path):
    rc, calls = _run(tmp_path, "12 passed in 3.0s")
    assert rc == 0
    assert len(calls) == 4
    assert calls[0].startswith("-c import cupy")
    assert calls[1].startswith("-m pytest -m cuda") and calls[1].endswith("tests/test_cuda.py")
    assert calls[2] == f"-m fastgd bench --device cuda --results {tmp_path / 'out'}/RESULTS.md"
    assert calls[3].endswith("tests/test_cuda_kernels.py")  # last: it needs no GPU
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "device.log", "cuda-tests.log", "cuda-kernels.log", "bench.log"}


def test_a_suite_that_only_skipped_fails_the_run(tmp_path):
    rc, calls = _run(tmp_path, "120 skipped in 1.0s")
    assert rc != 0
    assert len(calls) == 4  # the later steps still run


def test_a_step_past_its_budget_is_stopped_and_the_next_steps_run(tmp_path):
    # every step sleeps 30 s against a budget of 1 s: each is stopped and logged so
    rc, calls = _run(tmp_path, "3 passed", budgets="1 1 1 1", sleep="sleep 30")
    assert rc != 0
    assert len(calls) == 4
    log = (tmp_path / "out" / "bench.log").read_text()
    assert "bench.log stopped after its budget of 1 s" in log
