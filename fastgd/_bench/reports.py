"""The tables ``fastgd bench`` prints, and bench/RESULTS.md from a GPU run.

Optimizers on the CPU and the GPU, the models, and data-parallel training.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import fastgd
from fastgd import _backend
from fastgd._bench import workloads as W
from fastgd._bench.timing import isolated_runs, measure
from fastgd.optim.registry import generic

__all__ = ["CUDA_SIZES", "cuda_results_markdown", "report", "report_cuda",
           "report_distributed", "report_models"]

CUDA_SIZES = (1_000_000, 10_000_000, 100_000_000)


def _fused_vs_separate(workload: Callable[[int, str], Any], sizes: Sequence[int], key: str,
                       rounds: int, out: Callable[[str], None]) -> list[dict[str, Any]]:
    """Rows timing ``workload(n, impl)`` for ``"fused"``, ``"separate"`` and ``"torch"``."""
    rows = []
    for n in sizes:
        fns = {impl: fn for impl in ("fused", "separate", "torch")
               if (fn := workload(n, impl)) is not None}
        t = measure(fns, rounds)
        tt = t.get("torch")
        out(f"  n={n:<9} fused {_fmt_time(t['fused'])}   separate "
            f"{_fmt_time(t['separate'])} ({t['separate'] / t['fused']:.2f}x)"
            + (f"   torch {_fmt_time(tt)} ({tt / t['fused']:.2f}x)" if tt else ""))
        rows.append({"rule": "Adam", key: n, "fused_s": t["fused"],
                     "separate_s": t["separate"], "torch_s": tt})
    return rows


def _ratio(t: dict[str, float], peer: str) -> str:
    """The peer's time over fastgd's as a column, or '-' when the peer is missing."""
    return f"{t[peer] / t['fastgd']:>9.2f}x" if peer in t else f"{'-':>10}"


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:8.1f} us"
    return f"{s * 1e3:8.2f} ms"


def report(rules: Sequence[str] | None = None, sizes: Sequence[int] = W.SIZES,
           rounds: int = 15, model_rules: Sequence[str] = ("Adam", "SGD", "Adagrad"),
           out: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure and print the benchmark tables; return the rows.

    Columns: fastgd time, its GB/s, that as a fraction of the in-place axpy bandwidth
    measured in the same run, and fastgd's speed-up over the NumPy and torch peers.
    """
    rules = generic() if rules is None else rules
    rows: list[dict[str, Any]] = []
    torch = W._torch()
    out(f"fastgd {fastgd.__version__}; numpy {np.__version__}; "
        f"torch {torch.__version__ if torch else 'not installed'}; float32; median of "
        f"{rounds} interleaved rounds")
    head = (f"{'rule':<9}{'n':>10}{'fastgd':>12}{'GB/s':>8}{'x axpy':>8}"
            f"{'vs numpy':>10}{'vs torch':>10}")
    out(head)
    out("-" * len(head))
    for n in sizes:
        base = measure({"axpy": W.axpy(n)}, rounds)["axpy"]
        axpy_gbs = 12 * n / base / 1e9
        out(f"{'axpy':<9}{n:>10}{_fmt_time(base):>12}{axpy_gbs:>8.1f}{1.0:>8.2f}")
        for rule in rules:
            fns = {impl: fn for impl in ("fastgd", "numpy", "torch")
                   if (fn := W.single(rule, n, impl)) is not None}
            t = measure(fns, rounds)
            gbs = W.bytes_per_step(rule, n) / t["fastgd"] / 1e9
            row = {"rule": rule, "n": n, "fastgd_s": t["fastgd"], "gbps": gbs,
                   "axpy_fraction": gbs / axpy_gbs, "numpy_s": t.get("numpy"),
                   "torch_s": t.get("torch")}
            rows.append(row)
            vs_torch = f"{t['torch'] / t['fastgd']:>9.2f}x" if "torch" in t else f"{'-':>10}"
            out(f"{rule:<9}{n:>10}{_fmt_time(t['fastgd']):>12}{gbs:>8.1f}"
                f"{gbs / axpy_gbs:>8.2f}{_ratio(t, 'numpy')}{vs_torch}")
    if model_rules:
        out("")
        out("300 tensors (64..262144 elements, ~2e6 in total), float32")
        head = (f"{'rule':<9}{'FlatParams':>12}{'list':>12}{'list/flat':>11}{'torch':>12}"
                f"{'flat vs torch':>15}{'list vs torch':>15}")
        out(head)
        out("-" * len(head))
        for rule in model_rules:
            fns = {impl: fn for impl in ("fastgd", "fastgd-list", "torch")
                   if (fn := W.model(rule, impl)) is not None}
            t = measure(fns, rounds)
            tt, tl = t.get("torch"), t["fastgd-list"]
            out(f"{rule:<9}{_fmt_time(t['fastgd']):>12}{_fmt_time(tl):>12}"
                f"{tl / t['fastgd']:>10.2f}x"
                + (f"{_fmt_time(tt):>12}{tt / t['fastgd']:>14.2f}x{tt / tl:>14.2f}x"
                   if tt else ""))
            rows.append({"rule": rule, "model": True, "fastgd_s": t["fastgd"],
                         "list_s": t["fastgd-list"], "torch_s": tt})
        out("")
        out("Adam with clip_norm=1.0: fused into the step vs clip_grad_norm_ then step")
        rows += _fused_vs_separate(W.clipped, (1_000_000, 10_000_000), "clip_n", rounds, out)
        out("")
        out("Adam with an EMA of the weights: in the step kernel vs a second pass")
        rows += _fused_vs_separate(W.averaged, (1_000_000,), "average_n", rounds, out)
        out("")
        out("SparseAdam: 1e6 x 64 float32 table, 4096 touched rows (repeats coalesced)")
        fns = {impl: fn for impl in ("fastgd", "torch")
               if (fn := W.sparse_table(impl)) is not None}
        t = measure(fns, rounds)
        tt = t.get("torch")
        out(f"  fastgd {_fmt_time(t['fastgd'])}"
            + (f"   torch {_fmt_time(tt)} ({tt / t['fastgd']:.2f}x)" if tt else ""))
        rows.append({"rule": "SparseAdam", "sparse": True, "fastgd_s": t["fastgd"],
                     "torch_s": tt})
        out("")
        out("Muon: 1024 x 1024 float32 (fastgd: Newton-Schulz in float32; torch: bfloat16)")
        fns = {impl: fn for impl in ("fastgd", "torch") if (fn := W.muon(impl)) is not None}
        t = measure(fns, rounds)
        tt = t.get("torch")
        out(f"  fastgd {_fmt_time(t['fastgd'])}"
            + (f"   torch {_fmt_time(tt)} ({tt / t['fastgd']:.2f}x)" if tt else ""))
        rows.append({"rule": "Muon", "matrix": True, "fastgd_s": t["fastgd"], "torch_s": tt})
        out("")
        out("LBFGS: 10 iterations, history 20, n=1e6 float64 (closure: one elementwise pass)")
        fns = {impl: fn for impl in ("fastgd", "torch") if (fn := W.lbfgs(impl)) is not None}
        t = measure(fns, max(3, rounds // 3))
        tt = t.get("torch")
        out(f"  fastgd {_fmt_time(t['fastgd'])}"
            + (f"   torch {_fmt_time(tt)} ({tt / t['fastgd']:.2f}x)" if tt else ""))
        rows.append({"rule": "LBFGS", "closure": True, "fastgd_s": t["fastgd"],
                     "torch_s": tt})
        out("")
        out("opt.step overhead (Adam)")
        for n in (1, 1000):
            fns = {impl: fn for impl in ("fastgd", "torch")
                   if (fn := W.single("Adam", n, impl)) is not None}
            t = measure(fns, rounds)
            out(f"  n={n:<6} fastgd {_fmt_time(t['fastgd'])}"
                + (f"   torch fused {_fmt_time(t['torch'])}" if "torch" in t else ""))
            rows.append({"rule": "Adam", "overhead_n": n, "fastgd_s": t["fastgd"],
                         "torch_s": t.get("torch")})
        fns = {impl: fn for impl in ("fastgd", "fastgd-list", "fastgd-list-new", "torch")
               if (fn := W.model("Adam", impl, sizes=W.OVERHEAD_SIZES)) is not None}
        t = measure(fns, rounds)
        out(f"  300 x 4  FlatParams {_fmt_time(t['fastgd'])}   list {_fmt_time(t['fastgd-list'])}"
            f"   list, new gradient arrays {_fmt_time(t['fastgd-list-new'])}"
            + (f"   torch fused {_fmt_time(t['torch'])}" if "torch" in t else ""))
        rows.append({"rule": "Adam", "overhead_n": 4, "overhead_arrays": 300,
                     "fastgd_s": t["fastgd"], "list_s": t["fastgd-list"],
                     "list_new_grads_s": t["fastgd-list-new"], "torch_s": t.get("torch")})
    return rows


def report_cuda(rules: Sequence[str] | None = None, sizes: Sequence[int] = CUDA_SIZES,
                rounds: int = 15, out: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The GPU tables: each rule vs plain CuPy expressions and torch, and the copy bandwidth.

    The fraction column is fastgd's GB/s over the device-to-device copy's GB/s in the same
    run.
    """
    rules = generic() if rules is None else rules
    cp = _backend._cupy()
    sync = cp.cuda.Device().synchronize
    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    torch = W._torch()
    out(f"GPU: {name}; cupy {cp.__version__}; torch "
        f"{torch.__version__ if torch else 'not installed'}; float32; median of {rounds}")
    head = (f"{'rule':<9}{'n':>11}{'fastgd':>12}{'GB/s':>8}{'x copy':>8}{'vs cupy':>10}"
            f"{'vs torch':>10}")
    out(head)
    out("-" * len(head))
    rows: list[dict[str, Any]] = []
    for n in sizes:
        base = measure({"copy": W.device_copy(n)}, rounds, sync=sync)["copy"]
        copy_gbs = 8 * n / base / 1e9
        out(f"{'copy':<9}{n:>11}{_fmt_time(base):>12}{copy_gbs:>8.0f}{1.0:>8.2f}")
        for rule in rules:
            fns = {impl: fn for impl in ("fastgd", "numpy", "torch")
                   if (fn := W.single(rule, n, impl, xp=cp)) is not None}
            t = measure(fns, rounds, sync=sync)
            gbs = W.bytes_per_step(rule, n) / t["fastgd"] / 1e9
            vs_torch = f"{t['torch'] / t['fastgd']:>9.2f}x" if "torch" in t else f"{'-':>10}"
            out(f"{rule:<9}{n:>11}{_fmt_time(t['fastgd']):>12}{gbs:>8.0f}"
                f"{gbs / copy_gbs:>8.2f}{_ratio(t, 'numpy')}{vs_torch}")
            rows.append({"rule": rule, "n": n, "fastgd_s": t["fastgd"], "gbps": gbs,
                         "copy_fraction": gbs / copy_gbs, "cupy_s": t.get("numpy"),
                         "torch_s": t.get("torch")})
    out("")
    out("300 tensors on the GPU: FlatParams (one launch), a list (one multi-array launch)"
        " and torch fused over the tensors")
    for rule in ("Adam", "SGD", "Adagrad"):
        fns = {impl: fn for impl in ("fastgd", "fastgd-list", "torch")
               if (fn := W.model(rule, impl, xp=cp)) is not None}
        t = measure(fns, rounds, sync=sync)
        tt, tl = t.get("torch"), t["fastgd-list"]
        out(f"  {rule:<8} FlatParams {_fmt_time(t['fastgd'])}   list {_fmt_time(tl)}"
            + (f"   torch {_fmt_time(tt)} ({tt / t['fastgd']:.2f}x flat, {tt / tl:.2f}x list)"
               if tt else ""))
        rows.append({"rule": rule, "model": True, "fastgd_s": t["fastgd"], "list_s": tl,
                     "torch_s": tt})
    return rows


def cuda_results_markdown(lines: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """bench/RESULTS.md from :func:`report_cuda`'s printed ``lines`` and returned ``rows``.

    The figures are followed by the GPU goals of the CUDA backend (Adam at the largest size
    >= 0.85 of the copy bandwidth and >= 1.0x torch fused Adam; the 300-tensor FlatParams
    and list steps >= 2x torch fused) and whether this run met them.
    """
    import datetime

    def verdict(value: float | None, goal: float) -> str:
        if value is None:
            return "not measured (no torch with CUDA)"
        return f"{value:.2f} ({'met' if value >= goal else 'not met'}; goal {goal})"

    adam = [r for r in rows if r["rule"] == "Adam" and not r.get("model")]
    top = max(adam, key=lambda r: r["n"]) if adam else None
    flat = next((r for r in rows if r["rule"] == "Adam" and r.get("model")), None)
    goals = []
    if top is not None:
        goals.append(f"- Adam at n={top['n']:,}: fraction of the copy bandwidth "
                     + verdict(top["copy_fraction"], 0.85))
        goals.append("- Adam vs torch fused Adam: "
                     + verdict(top["torch_s"] / top["fastgd_s"] if top["torch_s"] else None,
                               1.0))
    if flat is not None:
        goals.append("- 300-tensor FlatParams Adam step vs torch fused: "
                     + verdict(flat["torch_s"] / flat["fastgd_s"] if flat["torch_s"] else None,
                               2.0))
        goals.append("- 300-tensor list Adam step (one multi-array launch) vs torch fused: "
                     + verdict(flat["torch_s"] / flat["list_s"] if flat["torch_s"] else None,
                               2.0))
    day = datetime.date.today().isoformat()
    return ("# GPU benchmark results\n\n"
            f"`fastgd bench --device cuda`, run on {day}. Times are medians of interleaved "
            "rounds; GB/s counts the bytes each update reads and writes; `x copy` is that "
            "over a device-to-device copy measured in the same run.\n\n"
            "```text\n" + "\n".join(lines) + "\n```\n\n## Goals\n\n"
            + "\n".join(goals) + "\n")


def report_models(rounds: int = 7, out: Callable[[str], None] = print,
                  processes: int = 3) -> None:
    """Per-step MLP times against torch, scikit-learn and the GEMM floor; a logistic epoch.

    Each MLP figure is the median over ``processes`` processes of their own per
    implementation (:func:`~fastgd._bench.timing.isolated_runs`), each process's figure
    the median of its rounds; every process's figure is listed under the table.
    """
    out("MLP training step (batch 256, float32, Adam; relu; softmax cross-entropy); "
        f"each implementation timed in {processes} processes of its own (median)")
    head = (f"{'model':<9}{'fastgd':>10}{'GEMM floor':>12}{'x floor':>9}{'torch':>17}"
            f"{'sklearn':>17}")
    out(head)
    out("-" * len(head))
    impls = ("fastgd", "gemm", "torch", "sklearn")
    spread = []
    for name in W.MLP_SHAPES:
        runs = isolated_runs(name, impls, rounds, processes)
        t = {impl: statistics.median(runs[impl]) if impl in runs else None
             for impl in impls}
        fast = t["fastgd"]
        cells = [(_fmt_time(t[i]).strip() + f" ({t[i] / fast:.2f}x)") if t[i] else "-"
                 for i in ("torch", "sklearn")]
        peers = "".join(f"{c:>17}" for c in cells)
        out(f"{name:<9}{_fmt_time(t['fastgd']):>10}{_fmt_time(t['gemm']):>12}"
            f"{t['fastgd'] / t['gemm']:>8.2f}x{peers}")
        spread.append(f"  {name}: {_per_process(runs)}")
    out("per process:")
    for line in spread:
        out(line)
    out("")
    out("multinomial logistic regression, one epoch of 200k x 100 (batches of 256), "
        f"median of {processes} processes")
    runs = isolated_runs("logistic", ("fastgd", "torch", "sklearn"), max(3, rounds // 2),
                         processes)
    t = {impl: statistics.median(ts) for impl, ts in runs.items()}
    out("  " + "   ".join(f"{impl} {_fmt_time(v)}" + (
        f" ({v / t['fastgd']:.2f}x)" if impl != "fastgd" else "")
        for impl, v in t.items()))
    out(f"  per process: {_per_process(runs)}")


def _per_process(runs: dict[str, list[float]]) -> str:
    """``isolated_runs``' figures as ``impl t1 / t2 / ...; impl ...``, in its order."""
    return "; ".join(f"{impl} " + " / ".join(_fmt_time(v).strip() for v in ts)
                     for impl, ts in runs.items())


def report_estimators(rounds: int = 3, out: Callable[[str], None] = print
                      ) -> list[dict[str, Any]]:
    """fastgd.sklearn against scikit-learn: fit times, test accuracy, the logistic optimum.

    Both fit the same estimator settings (:func:`~fastgd._bench.workloads.estimator`) on
    each data set of :data:`~fastgd._bench.workloads.ESTIMATOR_DATA` that is available,
    alternately, ``rounds`` times each after one untimed round; the median fit time is
    shown. scikit-learn is timed at both of
    :data:`~fastgd._bench.workloads.SKLEARN_THREADS` and compared at the faster (the
    ``threads`` column); fastgd's MLP at both of
    :data:`~fastgd._bench.workloads.FASTGD_THREADS` (the default, serial kernels, and
    ``n_jobs=-1``). The MLPs train for equal epochs; the logistic regressions to their
    stopping rule (the table shows how far fastgd's objective is from scikit-learn's,
    relatively).
    """
    out(f"scikit-learn estimators: fastgd.sklearn vs scikit-learn {_sklearn_version()} "
        f"(at its faster thread setting), median of {rounds} fits each, float64")
    head = (f"{'estimator':<22}{'data':<11}{'fastgd':>10}{'sklearn':>10}{'threads':>9}"
            f"{'speed-up':>10}{'n_jobs=-1':>11}{'speed-up':>10}{'acc fastgd':>12}"
            f"{'acc sklearn':>12}{'objective':>11}")
    out(head)
    out("-" * len(head))
    rows: list[dict[str, Any]] = []
    for kind in ("mlp", "logistic"):
        ours = tuple(W.FASTGD_THREADS) if kind == "mlp" else ("fastgd",)
        impls = (*ours, *W.SKLEARN_THREADS)
        for data in W.ESTIMATOR_DATA:
            split = W.estimator_data(data)
            if split is None:
                out(f"{kind:<22}{data:<11}  (not available)")
                continue
            Xtr, Xte, ytr, yte = split
            times: dict[str, list[float]] = {impl: [] for impl in impls}
            fitted: dict[str, Any] = {}
            for r in range(rounds + 1):  # the first round warms up (kernels, caches)
                for impl in impls:
                    est = W.estimator(kind, data, impl)
                    t0 = time.perf_counter()
                    W.fit_estimator(est, Xtr, ytr, impl)
                    if r:
                        times[impl].append(time.perf_counter() - t0)
                    fitted[impl] = est
            t = {k: float(np.median(v)) for k, v in times.items()}
            peer, threads = _faster_sklearn(t)
            acc = {k: float(fitted[k].score(Xte, yte)) for k in (*ours, peer)}
            rel = None
            if kind == "logistic":
                f = {k: W.logistic_objective(fitted[k], Xtr, ytr) for k in ("fastgd", peer)}
                rel = (f["fastgd"] - f[peer]) / abs(f[peer])
            name = ("MLPClassifier(100,)" if kind == "mlp" else "LogisticRegression")
            tj = t.get("fastgd-n_jobs=-1")
            jobs = (f"{_fmt_time(tj):>11}{t[peer] / tj:>9.2f}x" if tj is not None
                    else " " * 21)
            out(f"{name:<22}{data:<11}{_fmt_time(t['fastgd']):>10}{_fmt_time(t[peer]):>10}"
                f"{threads:>9}{t[peer] / t['fastgd']:>9.2f}x{jobs}{acc['fastgd']:>12.4f}"
                f"{acc[peer]:>12.4f}" + (f"{rel:>+11.1e}" if rel is not None else ""))
            rows.append({"kind": kind, "data": data, "fastgd_s": t["fastgd"],
                         "fastgd_all_threads_s": tj,
                         "sklearn_s": t[peer], "sklearn_threads": threads,
                         "sklearn_all_threads_s": t["sklearn"],
                         "sklearn_1thread_s": t["sklearn-1thread"],
                         "acc_fastgd": acc["fastgd"], "acc_sklearn": acc[peer],
                         "acc_fastgd_all_threads": acc.get("fastgd-n_jobs=-1"),
                         "objective_rel": rel})
    return rows


def report_settings(rounds: int = 3, out: Callable[[str], None] = print,
                    settings: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """fastgd.sklearn against scikit-learn in the settings of :data:`ESTIMATOR_SETTINGS`.

    Each setting times fastgd's call and scikit-learn's at both of
    :data:`~fastgd._bench.workloads.SKLEARN_THREADS` in interleaved rounds
    (:func:`~fastgd._bench.timing.measure`, after a warm-up call), and compares with the
    faster scikit-learn. A fit builds a new estimator each call.
    """
    out(f"fastgd.sklearn vs scikit-learn {_sklearn_version()} in other settings (at its "
        f"faster thread setting), median of {rounds} interleaved rounds, float64")
    head = (f"{'setting':<24}{'data':<19}{'method':<13}{'fastgd':>10}{'sklearn':>11}"
            f"{'threads':>9}{'speed-up':>10}")
    out(head)
    out("-" * len(head))
    rows: list[dict[str, Any]] = []
    impls = ("fastgd", *W.SKLEARN_THREADS)
    for name in settings if settings is not None else W.ESTIMATOR_SETTINGS:
        _, data, _, method = W.ESTIMATOR_SETTINGS[name]
        Xy = W.setting_data(data)
        if Xy is None:
            out(f"{name:<24}{data:<19}  (not available)")
            continue
        t = measure({impl: W.setting_call(name, impl, Xy) for impl in impls}, rounds,
                    min_time=0.01)
        peer, threads = _faster_sklearn(t)
        out(f"{name:<24}{data:<19}{method:<13}{_fmt_time(t['fastgd']):>10}"
            f"{_fmt_time(t[peer]):>11}{threads:>9}{t[peer] / t['fastgd']:>9.2f}x")
        rows.append({"setting": name, "data": data, "method": method,
                     "fastgd_s": t["fastgd"], "sklearn_s": t[peer], "sklearn_threads": threads,
                     "sklearn_all_threads_s": t["sklearn"],
                     "sklearn_1thread_s": t["sklearn-1thread"]})
    return rows


def _faster_sklearn(t: dict[str, float]) -> tuple[str, str]:
    """The faster of scikit-learn's thread settings in times ``t``, and its label."""
    peer = min(W.SKLEARN_THREADS, key=lambda k: t[k])
    limit = W.SKLEARN_THREADS[peer]
    return peer, "all" if limit is None else str(limit)


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def report_distributed(steps: int = 50, batch: int = 256,
                       out: Callable[[str], None] = print) -> None:
    """Per-step time split into compute / allreduce / update, under ``mpiexec`` (rank 0 prints).

    Run it with 1 and with N ranks (``mpiexec -n 2 python -m mpi4py -m fastgd bench
    --distributed``): each rank computes its shard of a global batch of ``batch`` rows of
    the 784-256-128-10 MLP; scaling efficiency = time(1 rank) / (N * time(N ranks)) per
    sample. Also the allreduce throughput for the model's gradient buffer.
    """
    from fastgd.distributed import DataParallel
    from fastgd.models import MLP

    shape = W.MLP_SHAPES["mlp-784"]
    model = MLP(shape, output="multiclass", seed=0)
    opt = fastgd.Adam(model.flat, lr=1e-3)
    dp = DataParallel(model.flat)
    X, y = W._classes_data(batch, shape[0], shape[-1])
    part = dp.shard(batch)
    xs, ys = X[part], y[part]
    times = {"compute": [], "allreduce": [], "update": []}
    dp.broadcast_parameters()
    with fastgd.serial_kernels():
        for i in range(steps + 5):
            dp.comm.Barrier()
            t0 = time.perf_counter()
            model.loss_and_grad(xs, ys)
            t1 = time.perf_counter()
            dp.allreduce_gradients(len(xs), batch)
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if i >= 5:
                times["compute"].append(t1 - t0)
                times["allreduce"].append(t2 - t1)
                times["update"].append(t3 - t2)
    med = {k: statistics.median(v) for k, v in times.items()}
    grad_bytes = sum(b.nbytes for b in model.flat.grad_buffers.values())
    # raw allreduce throughput on a buffer of the gradient's size
    buf = np.ones(grad_bytes // 4, np.float32)
    ts = []
    for _ in range(20):
        dp.comm.Barrier()
        t0 = time.perf_counter()
        dp.comm.Allreduce(dp._MPI.IN_PLACE, buf, op=dp._MPI.SUM)
        ts.append(time.perf_counter() - t0)
    ar = statistics.median(ts)
    if dp.rank == 0:
        total = sum(med.values())
        out(f"{dp.size} rank(s), MLP 784-256-128-10, global batch {batch} "
            f"({len(xs)} rows on rank 0), median of {steps} steps")
        out("  " + "   ".join(f"{k} {_fmt_time(v)}" for k, v in med.items())
            + f"   step {_fmt_time(total)}   {batch / total:,.0f} samples/s")
        out(f"  allreduce of {grad_bytes / 1e6:.2f} MB: {_fmt_time(ar)} "
            f"({grad_bytes / ar / 1e9:.2f} GB/s)")
