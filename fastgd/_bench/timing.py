"""Timing: interleaved rounds and medians, and one workload per process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from fastgd._bench import workloads as W

__all__ = ["isolated", "isolated_runs", "measure"]


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


def isolated_runs(workload: str, impls: Sequence[str], rounds: int, processes: int
                  ) -> dict[str, list[float]]:
    """Each implementation's :func:`isolated` medians from ``processes`` processes apiece.

    The processes run in turn (every implementation once, then again), so a slow spell of
    a shared machine falls on all of them. More than one process per implementation
    because a process can be slow throughout: on this 2-core virtual machine an MLP step
    took either ~1.6 or ~3.0 ms per process (784-wide, BLAS on two threads), as data passed
    between the vCPUs slowly at times. Implementations that are not installed are left out.
    """
    runs: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(processes):
        for impl in impls:
            t = isolated(workload, impl, rounds)
            if t is not None and t == t:  # None: not installed; NaN: the process failed
                runs[impl].append(t)
    return {impl: ts for impl, ts in runs.items() if ts}


def time_one(workload: str, impl: str, rounds: int) -> float | None:
    """Median seconds of one workload in this process (what :func:`isolated` runs)."""
    if workload == "logistic":
        fn = W.logistic_epoch(impl)
        return None if fn is None else measure({impl: fn}, rounds, min_time=0.0)[impl]
    fn = W.model_step(W.MLP_SHAPES[workload], impl)
    return None if fn is None else measure({impl: fn}, rounds)[impl]


