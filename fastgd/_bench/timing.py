"""Timing: interleaved rounds and medians, and one workload per process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from fastgd._bench import workloads as W

__all__ = ["isolated", "measure"]


def measure(fns: dict[str, Callable[[], None]], rounds: int = 15,
            min_time: float = 0.01, sync: Callable[[], None] | None = None,
            settle: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each callable, timed in interleaved rounds.

    Each callable is warmed up (compiling what it needs), then every round times each
    callable once over a batch of calls lasting at least ``min_time``, so slow drifts of a
    shared machine hit every implementation alike. ``sync`` (e.g. a CUDA device
    synchronize) runs before the clock is read at both ends of a batch. ``settle`` sleeps
    before each batch so that the previous implementation's spin-waiting worker threads
    (OpenBLAS, OpenMP) go idle and do not slow the next one.
    """
    sync = sync or (lambda: None)
    batch = {}
    for name, fn in fns.items():
        fn()
        sync()
        k, t = 1, 0.0
        while True:
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            sync()
            t = time.perf_counter() - t0
            if t >= min_time or k >= 1 << 20:
                break
            k *= 4
        batch[name] = k
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            k = batch[name]
            if settle:
                time.sleep(settle)
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            sync()
            times[name].append((time.perf_counter() - t0) / k)
    return {name: statistics.median(ts) for name, ts in times.items()}


def isolated(workload: str, impl: str, rounds: int) -> float | None:
    """Median seconds of one workload, timed in a fresh Python process of its own.

    Each implementation runs alone: torch's OpenMP threads, OpenBLAS's and Numba's spin-wait
    after their work, and measured in one process on 2 cores they slowed one another up to
    14x, whichever ran next.
    """
    import subprocess
    import sys

    code = ("from fastgd._bench import timing\n"
            f"print(timing.time_one({workload!r}, {impl!r}, {rounds}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900)
    value = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "nan"
    return None if value == "None" else float(value)


def time_one(workload: str, impl: str, rounds: int) -> float | None:
    """Median seconds of one workload in this process (what :func:`isolated` runs)."""
    if workload == "logistic":
        fn = W.logistic_epoch(impl)
        return None if fn is None else measure({impl: fn}, rounds, min_time=0.0)[impl]
    fn = W.model_step(W.MLP_SHAPES[workload], impl)
    return None if fn is None else measure({impl: fn}, rounds)[impl]


