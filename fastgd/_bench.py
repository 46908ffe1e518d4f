"""Benchmark workloads shared by the pytest-benchmark suite (bench/) and ``fastgd bench``.

Every figure is reported against peers measured in the same run: a NumPy implementation
written carefully in place (preallocated temporaries, ``out=``), torch.optim (``fused=True``
where torch has a fused CPU kernel) when torch is installed, and an in-place axpy kernel
(``y += a*x``: 12 bytes per float32 element, read-modify-write like the optimizers) as the
memory-bandwidth baseline.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import fastgd
from fastgd import _backend

#: Hyperparameters each rule is benchmarked with (its usual configuration).
CONFIGS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.01, "momentum": 0.9},
    "Adagrad": {"lr": 0.01},
    "Adadelta": {},
    "RMSprop": {"lr": 0.01},
    "Adam": {"lr": 1e-3},
    "AdamW": {"lr": 1e-3},
    "Adamax": {},
    "NAdam": {},
    "RAdam": {},
    "Lion": {"lr": 1e-4},
}
#: State buffers per parameter for each configuration.
N_STATE = {"SGD": 1, "Adagrad": 1, "Adadelta": 2, "RMSprop": 1, "Adam": 2, "AdamW": 2,
           "Adamax": 2, "NAdam": 2, "RAdam": 2, "Lion": 1}
#: torch.optim classes with a fused CPU kernel.
TORCH_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)


def bytes_per_step(rule: str, n: int, itemsize: int = 4) -> int:
    """Memory traffic of one step: read g, read and write param and each state buffer."""
    return itemsize * n * (1 + 2 * (1 + N_STATE[rule]))


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- the NumPy peer: each rule in place, with one preallocated temporary -----------------


def numpy_step(rule: str, param: Any, g: Any) -> Callable[[], None]:
    """A careful in-place implementation of ``rule``'s benchmark configuration.

    Written with plain array expressions of ``param``'s module (NumPy, or CuPy on a GPU),
    one preallocated temporary, ``out=`` everywhere.
    """
    xp = _backend.xp_of(param)
    hp = {**_defaults(rule), **CONFIGS[rule]}
    tmp = xp.empty_like(param)
    s = [xp.zeros_like(param) for _ in range(N_STATE[rule])]
    count = [0]
    lr = hp["lr"]

    def adam_moments(m, v, b1, b2):
        t = tmp
        xp.subtract(g, m, out=t)
        t *= 1 - b1
        m += t
        v *= b2
        xp.multiply(g, g, out=t)
        t *= 1 - b2
        v += t

    def sgd():
        p, t = param, tmp
        (buf,) = s
        buf *= hp["momentum"]
        buf += g
        xp.multiply(buf, lr, out=t)
        p -= t

    def adagrad():
        p, t = param, tmp
        (acc,) = s
        xp.multiply(g, g, out=t)
        acc += t
        xp.sqrt(acc, out=t)
        t += hp["eps"]
        xp.divide(g, t, out=t)
        t *= lr
        p -= t

    def adadelta():
        p, t = param, tmp
        u, a = s
        rho, eps = hp["rho"], hp["eps"]
        u *= rho
        xp.multiply(g, g, out=t)
        t *= 1 - rho
        u += t
        xp.add(u, eps, out=t)
        xp.sqrt(t, out=t)
        # t <- sqrt(a + eps) / t * g, reusing p's update below
        d = xp.add(a, eps)
        xp.sqrt(d, out=d)
        xp.divide(d, t, out=t)
        t *= g
        a *= rho
        xp.multiply(t, t, out=d)
        d *= 1 - rho
        a += d
        t *= lr
        p -= t

    def rmsprop():
        p, t = param, tmp
        (sq,) = s
        sq *= hp["alpha"]
        xp.multiply(g, g, out=t)
        t *= 1 - hp["alpha"]
        sq += t
        xp.sqrt(sq, out=t)
        t += hp["eps"]
        xp.divide(g, t, out=t)
        t *= lr
        p -= t

    def adam(decoupled):
        p, t = param, tmp
        m, v = s
        b1, b2 = hp["betas"]
        count[0] += 1
        step = count[0]
        if decoupled:
            p *= 1 - lr * hp["weight_decay"]
        adam_moments(m, v, b1, b2)
        xp.sqrt(v, out=t)
        t /= math.sqrt(1 - b2**step)
        t += hp["eps"]
        xp.divide(m, t, out=t)
        t *= lr / (1 - b1**step)
        p -= t

    def adamax():
        p, t = param, tmp
        m, u = s
        b1, b2 = hp["betas"]
        count[0] += 1
        xp.subtract(g, m, out=t)
        t *= 1 - b1
        m += t
        u *= b2
        xp.abs(g, out=t)
        t += hp["eps"]
        xp.maximum(u, t, out=u)
        xp.divide(m, u, out=t)
        t *= lr / (1 - b1 ** count[0])
        p -= t

    def nadam():
        p, t = param, tmp
        m, v = s
        b1, b2 = hp["betas"]
        count[0] += 1
        step = count[0]
        psi = hp["momentum_decay"]
        mu = b1 * (1 - 0.5 * 0.96 ** (step * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((step + 1) * psi))
        hp["_prod"] = prod = hp.get("_prod", 1.0) * mu
        adam_moments(m, v, b1, b2)
        d = xp.divide(v, 1 - b2**step)
        xp.sqrt(d, out=d)
        d += hp["eps"]
        xp.divide(g, d, out=t)
        t *= lr * (1 - mu) / (1 - prod)
        p -= t
        xp.divide(m, d, out=t)
        t *= lr * mu_next / (1 - prod * mu_next)
        p -= t

    def radam():
        p, t = param, tmp
        m, v = s
        b1, b2 = hp["betas"]
        count[0] += 1
        step = count[0]
        adam_moments(m, v, b1, b2)
        bc2 = 1 - b2**step
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * step * b2**step / bc2
        xp.multiply(m, lr / (1 - b1**step), out=t)
        if rho_t > 5:
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                          / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            d = xp.sqrt(v)
            d += hp["eps"]
            xp.divide(t, d, out=t)
            t *= math.sqrt(bc2) * r
        p -= t

    def lion():
        p, t = param, tmp
        (m,) = s
        b1, b2 = hp["betas"]
        xp.multiply(m, b1, out=t)
        t += (1 - b1) * g
        xp.sign(t, out=t)
        t *= lr
        p -= t
        m *= b2
        m += (1 - b2) * g

    table = {"SGD": sgd, "Adagrad": adagrad, "Adadelta": adadelta, "RMSprop": rmsprop,
             "Adam": lambda: adam(False), "AdamW": lambda: adam(True), "Adamax": adamax,
             "NAdam": nadam, "RAdam": radam, "Lion": lion}
    return table[rule]


def _defaults(rule: str) -> dict[str, Any]:
    import inspect

    sig = inspect.signature(getattr(fastgd, rule).__init__)
    return {k: v.default for k, v in sig.parameters.items()
            if v.default is not inspect.Parameter.empty}


# -- workloads -----------------------------------------------------------------------------


def single(rule: str, n: int, impl: str, seed: int = 0, xp: Any = np
           ) -> Callable[[], None] | None:
    """One step of ``rule`` on one float32 array of ``n`` elements, or None if unavailable.

    Args:
        rule: optimizer class name, e.g. ``"Adam"``.
        n: number of parameters.
        impl: ``"fastgd"``, ``"numpy"`` (plain array expressions: NumPy, or CuPy when
            ``xp`` is cupy) or ``"torch"`` (on the GPU when ``xp`` is cupy).
        seed: seed of the random parameter and gradient.
        xp: numpy, or cupy for the GPU workloads.
    """
    rng = np.random.default_rng(seed)
    p = xp.asarray(rng.standard_normal(n, dtype=np.float32))
    g = xp.asarray(rng.standard_normal(n, dtype=np.float32))
    if impl == "fastgd":
        opt = getattr(fastgd, rule)([p], **CONFIGS[rule])
        grads = [g]
        return lambda: opt.step(grads)
    if impl == "numpy":
        return numpy_step(rule, p, g)
    if impl == "torch":
        torch = _torch()
        if torch is None or rule == "Lion" or (xp is not np and not torch.cuda.is_available()):
            return None
        tp = torch.as_tensor(p, device="cuda") if xp is not np else torch.from_numpy(p)
        tp.grad = torch.as_tensor(g, device="cuda") if xp is not np else torch.from_numpy(g)
        kw = {"fused": True} if rule in TORCH_FUSED else {}
        topt = getattr(torch.optim, rule)([tp], **CONFIGS[rule], **kw)
        return topt.step
    raise ValueError(f"unknown impl {impl!r}")


def axpy(n: int) -> Callable[[], None]:
    """The bandwidth baseline: in-place ``y += a*x`` over ``n`` float32 elements."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    return lambda: _backend.launch("axpy", "axpy", (), x, 1e-7, y)


def model_sizes(seed: int = 0) -> list[int]:
    """300 model-like tensor sizes from 64 to 262144 (log-uniform), about 2e6 in total."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(64), np.log(262144), 300)).astype(int)
    return [int(s) for s in sizes * (2_000_000 / sizes.sum())]


def model(rule: str, impl: str, xp: Any = np) -> Callable[[], None] | None:
    """One step over the 300-tensor list: FlatParams (fastgd) or separate tensors (torch)."""
    sizes = model_sizes()
    rng = np.random.default_rng(1)
    if impl == "fastgd":
        flat = fastgd.FlatParams([(s,) for s in sizes], xp=xp)
        for p, g in zip(flat.params, flat.grads):
            p[...] = xp.asarray(rng.standard_normal(p.shape))
            g[...] = xp.asarray(rng.standard_normal(g.shape))
        opt = getattr(fastgd, rule)(flat, **CONFIGS[rule])
        return opt.step
    if impl == "fastgd-list":
        ps = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
        gs = [rng.standard_normal(s, dtype=np.float32) for s in sizes]
        opt = getattr(fastgd, rule)(ps, **CONFIGS[rule])
        return lambda: opt.step(gs)
    if impl == "torch":
        torch = _torch()
        device = "cpu" if xp is np else "cuda"
        if torch is None or rule == "Lion" or (device == "cuda" and not torch.cuda.is_available()):
            return None
        tps = []
        for s in sizes:
            tp = torch.from_numpy(rng.standard_normal(s, dtype=np.float32)).to(device)
            tp.grad = torch.from_numpy(rng.standard_normal(s, dtype=np.float32)).to(device)
            tps.append(tp)
        kw = {"fused": True} if rule in TORCH_FUSED else {}
        return getattr(torch.optim, rule)(tps, **CONFIGS[rule], **kw).step
    raise ValueError(f"unknown impl {impl!r}")


def clipped(n: int, impl: str) -> Callable[[], None] | None:
    """An Adam step with global-norm clipping to 1.0 over ``n`` float32 parameters.

    ``impl``: ``"fused"`` (``opt.step(clip_norm=1.0)``: one norm pass + the update),
    ``"separate"`` (``clip_grad_norm_`` then ``opt.step()``: norm, scale, update passes) or
    ``"torch"`` (torch.nn.utils.clip_grad_norm_ then fused Adam).
    """
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32) * 10
    if impl in ("fused", "separate"):
        flat = fastgd.FlatParams([p])
        flat.grads[0][...] = g
        opt = fastgd.Adam(flat, lr=1e-3)
        if impl == "fused":
            return lambda: opt.step(clip_norm=1.0)

        def separate() -> None:
            fastgd.clip_grad_norm_(flat.grads, 1.0)
            opt.step()

        return separate
    torch = _torch()
    if torch is None:
        return None
    tp = torch.from_numpy(p)
    tp.grad = torch.from_numpy(g)
    topt = torch.optim.Adam([tp], lr=1e-3, fused=True)

    def step() -> None:
        torch.nn.utils.clip_grad_norm_([tp], 1.0)
        topt.step()

    return step


# -- timing for the command line -------------------------------------------------------------


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


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:8.1f} us"
    return f"{s * 1e3:8.2f} ms"


def report(rules: Sequence[str] = tuple(CONFIGS), sizes: Sequence[int] = SIZES,
           rounds: int = 15, model_rules: Sequence[str] = ("Adam", "SGD", "Adagrad"),
           out: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure and print the benchmark tables; return the rows.

    Columns: fastgd time, its GB/s, that as a fraction of the in-place axpy bandwidth
    measured in the same run, and fastgd's speed-up over the NumPy and torch peers.
    """
    rows: list[dict[str, Any]] = []
    torch = _torch()
    out(f"fastgd {fastgd.__version__}; numpy {np.__version__}; "
        f"torch {torch.__version__ if torch else 'not installed'}; float32; median of "
        f"{rounds} interleaved rounds")
    head = (f"{'rule':<9}{'n':>10}{'fastgd':>12}{'GB/s':>8}{'x axpy':>8}"
            f"{'vs numpy':>10}{'vs torch':>10}")
    out(head)
    out("-" * len(head))
    for n in sizes:
        base = measure({"axpy": axpy(n)}, rounds)["axpy"]
        axpy_gbs = 12 * n / base / 1e9
        out(f"{'axpy':<9}{n:>10}{_fmt_time(base):>12}{axpy_gbs:>8.1f}{1.0:>8.2f}")
        for rule in rules:
            fns = {impl: fn for impl in ("fastgd", "numpy", "torch")
                   if (fn := single(rule, n, impl)) is not None}
            t = measure(fns, rounds)
            gbs = bytes_per_step(rule, n) / t["fastgd"] / 1e9
            row = {"rule": rule, "n": n, "fastgd_s": t["fastgd"], "gbps": gbs,
                   "axpy_fraction": gbs / axpy_gbs, "numpy_s": t["numpy"],
                   "torch_s": t.get("torch")}
            rows.append(row)
            vs_torch = f"{t['torch'] / t['fastgd']:>9.2f}x" if "torch" in t else f"{'-':>10}"
            out(f"{rule:<9}{n:>10}{_fmt_time(t['fastgd']):>12}{gbs:>8.1f}"
                f"{gbs / axpy_gbs:>8.2f}{t['numpy'] / t['fastgd']:>9.2f}x{vs_torch}")
    if model_rules:
        out("")
        out("300 tensors (64..262144 elements, ~2e6 in total), float32")
        head = f"{'rule':<9}{'FlatParams':>12}{'list':>12}{'torch':>12}{'vs torch':>10}"
        out(head)
        out("-" * len(head))
        for rule in model_rules:
            fns = {impl: fn for impl in ("fastgd", "fastgd-list", "torch")
                   if (fn := model(rule, impl)) is not None}
            t = measure(fns, rounds)
            tt = t.get("torch")
            out(f"{rule:<9}{_fmt_time(t['fastgd']):>12}{_fmt_time(t['fastgd-list']):>12}"
                + (f"{_fmt_time(tt):>12}{tt / t['fastgd']:>9.2f}x" if tt else ""))
            rows.append({"rule": rule, "model": True, "fastgd_s": t["fastgd"],
                         "list_s": t["fastgd-list"], "torch_s": tt})
        out("")
        out("Adam with clip_norm=1.0: fused into the step vs clip_grad_norm_ then step")
        for n in (1_000_000, 10_000_000):
            fns = {impl: fn for impl in ("fused", "separate", "torch")
                   if (fn := clipped(n, impl)) is not None}
            t = measure(fns, rounds)
            tt = t.get("torch")
            out(f"  n={n:<9} fused {_fmt_time(t['fused'])}   separate "
                f"{_fmt_time(t['separate'])} ({t['separate'] / t['fused']:.2f}x)"
                + (f"   torch {_fmt_time(tt)} ({tt / t['fused']:.2f}x)" if tt else ""))
            rows.append({"rule": "Adam", "clip_n": n, "fused_s": t["fused"],
                         "separate_s": t["separate"], "torch_s": tt})
        out("")
        out("opt.step overhead (Adam)")
        for n in (1, 1000):
            fns = {impl: fn for impl in ("fastgd", "torch")
                   if (fn := single("Adam", n, impl)) is not None}
            t = measure(fns, rounds)
            out(f"  n={n:<6} fastgd {_fmt_time(t['fastgd'])}"
                + (f"   torch fused {_fmt_time(t['torch'])}" if "torch" in t else ""))
            rows.append({"rule": "Adam", "overhead_n": n, "fastgd_s": t["fastgd"],
                         "torch_s": t.get("torch")})
    return rows


# -- the GPU --------------------------------------------------------------------------------

CUDA_SIZES = (1_000_000, 10_000_000, 100_000_000)


def device_copy(n: int) -> Callable[[], None]:
    """The GPU bandwidth baseline: a device-to-device copy of ``n`` float32 (8 bytes each)."""
    import cupy as cp

    src = cp.ones(n, cp.float32)
    dst = cp.empty_like(src)
    return lambda: cp.copyto(dst, src)


def report_cuda(rules: Sequence[str] = tuple(CONFIGS), sizes: Sequence[int] = CUDA_SIZES,
                rounds: int = 15, out: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The GPU tables: each rule vs plain CuPy expressions and torch, and the copy bandwidth.

    The fraction column is fastgd's GB/s over the device-to-device copy's GB/s in the same
    run.
    """
    import cupy as cp

    sync = cp.cuda.Device().synchronize
    name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    torch = _torch()
    out(f"GPU: {name}; cupy {cp.__version__}; torch "
        f"{torch.__version__ if torch else 'not installed'}; float32; median of {rounds}")
    head = (f"{'rule':<9}{'n':>11}{'fastgd':>12}{'GB/s':>8}{'x copy':>8}{'vs cupy':>10}"
            f"{'vs torch':>10}")
    out(head)
    out("-" * len(head))
    rows: list[dict[str, Any]] = []
    for n in sizes:
        base = measure({"copy": device_copy(n)}, rounds, sync=sync)["copy"]
        copy_gbs = 8 * n / base / 1e9
        out(f"{'copy':<9}{n:>11}{_fmt_time(base):>12}{copy_gbs:>8.0f}{1.0:>8.2f}")
        for rule in rules:
            fns = {impl: fn for impl in ("fastgd", "numpy", "torch")
                   if (fn := single(rule, n, impl, xp=cp)) is not None}
            t = measure(fns, rounds, sync=sync)
            gbs = bytes_per_step(rule, n) / t["fastgd"] / 1e9
            vs_torch = f"{t['torch'] / t['fastgd']:>9.2f}x" if "torch" in t else f"{'-':>10}"
            out(f"{rule:<9}{n:>11}{_fmt_time(t['fastgd']):>12}{gbs:>8.0f}"
                f"{gbs / copy_gbs:>8.2f}{t['numpy'] / t['fastgd']:>9.2f}x{vs_torch}")
            rows.append({"rule": rule, "n": n, "fastgd_s": t["fastgd"], "gbps": gbs,
                         "copy_fraction": gbs / copy_gbs, "cupy_s": t["numpy"],
                         "torch_s": t.get("torch")})
    out("")
    out("300 tensors on the GPU: FlatParams (one launch) vs torch fused over the tensors")
    for rule in ("Adam", "SGD", "Adagrad"):
        fns = {impl: fn for impl in ("fastgd", "torch")
               if (fn := model(rule, impl, xp=cp)) is not None}
        t = measure(fns, rounds, sync=sync)
        tt = t.get("torch")
        out(f"  {rule:<8} FlatParams {_fmt_time(t['fastgd'])}"
            + (f"   torch {_fmt_time(tt)} ({tt / t['fastgd']:.2f}x)" if tt else ""))
        rows.append({"rule": rule, "model": True, "fastgd_s": t["fastgd"], "torch_s": tt})
    return rows


def cuda_results_markdown(lines: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """bench/RESULTS.md from :func:`report_cuda`'s printed ``lines`` and returned ``rows``.

    The figures are followed by the GPU goals of the CUDA backend (Adam at the largest size
    >= 0.85 of the copy bandwidth and >= 1.0x torch fused Adam; the 300-tensor FlatParams
    step >= 2x torch fused) and whether this run met them.
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
    day = datetime.date.today().isoformat()
    return ("# GPU benchmark results\n\n"
            f"`fastgd bench --device cuda`, run on {day}. Times are medians of interleaved "
            "rounds; GB/s counts the bytes each update reads and writes; `x copy` is that "
            "over a device-to-device copy measured in the same run.\n\n"
            "```text\n" + "\n".join(lines) + "\n```\n\n## Goals\n\n"
            + "\n".join(goals) + "\n")


# -- models ---------------------------------------------------------------------------------

MLP_SHAPES = {"mlp-100": [100, 256, 128, 10], "mlp-784": [784, 256, 128, 10]}


def _classes_data(n: int, d: int, k: int = 10, seed: int = 0) -> tuple[Any, Any]:
    """A synthetic k-class problem: labels from a random linear map plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W = rng.standard_normal((d, k), dtype=np.float32)
    y = np.argmax(X @ W + rng.standard_normal((n, k), dtype=np.float32), axis=1)
    return X, y.astype(np.int64)


def model_step(shape: Sequence[int], impl: str, batch: int = 256) -> Callable[[], None] | None:
    """One training step (forward, backward, Adam update) on one batch.

    ``impl``: ``"fastgd"``, ``"torch"`` (the same architecture, fused Adam),
    ``"sklearn"`` (MLPClassifier.partial_fit on the batch, float32) or ``"gemm"`` (the
    forward and backward matmuls alone: the floor).
    """
    from fastgd.models import MLP

    X, y = _classes_data(batch, shape[0], shape[-1])
    if impl == "fastgd":
        model = MLP(list(shape), output="multiclass", seed=0)
        opt = fastgd.Adam(model.flat, lr=1e-3)

        def step() -> None:
            with fastgd.serial_kernels():  # as fastgd.fit does
                model.loss_and_grad(X, y)
                opt.step()

        return step
    if impl == "gemm":
        rng = np.random.default_rng(0)
        Ws = [rng.standard_normal((a, b), dtype=np.float32) for a, b in itertools.pairwise(shape)]
        As = [X] + [np.empty((batch, b), np.float32) for b in shape[1:]]
        Gs = [np.empty_like(w) for w in Ws]
        Ds = [np.empty((batch, b), np.float32) for b in shape[1:]]

        def gemm() -> None:
            for i, w in enumerate(Ws):
                np.matmul(As[i], w, out=As[i + 1])
            for i in range(len(Ws) - 1, -1, -1):
                np.matmul(As[i].T, Ds[i], out=Gs[i])
                if i:
                    np.matmul(Ds[i], Ws[i].T, out=Ds[i - 1])

        return gemm
    if impl == "torch":
        torch = _torch()
        if torch is None:
            return None
        layers: list[Any] = []
        for a, b in itertools.pairwise(shape):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        net = torch.nn.Sequential(*layers[:-1])
        topt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
        tx, ty = torch.from_numpy(X), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()

        def tstep() -> None:
            topt.zero_grad(set_to_none=False)
            loss_fn(net(tx), ty).backward()
            topt.step()

        return tstep
    if impl == "sklearn":
        try:
            from sklearn.neural_network import MLPClassifier
        except ImportError:
            return None
        clf = MLPClassifier(hidden_layer_sizes=tuple(shape[1:-1]), batch_size=batch,
                            random_state=0)
        clf.partial_fit(X, y, classes=np.arange(shape[-1]))

        def sstep() -> None:
            clf.partial_fit(X, y)

        return sstep
    raise ValueError(f"unknown impl {impl!r}")


def logistic_epoch(impl: str, n: int = 200_000, d: int = 100, batch: int = 256
                   ) -> Callable[[], None] | None:
    """One epoch of multinomial logistic regression (10 classes), mini-batches of 256."""
    from fastgd.models import LogisticRegression

    X, y = _classes_data(n, d)
    if impl == "fastgd":
        model = LogisticRegression(d, 10, seed=0)
        opt = fastgd.Adam(model.flat, lr=1e-3)
        rng = np.random.default_rng(0)
        return lambda: fastgd.fit(model, opt, X, y, epochs=1, batch_size=batch, seed=rng,
                                  progress=False)
    if impl == "torch":
        torch = _torch()
        if torch is None:
            return None
        lin = torch.nn.Linear(d, 10)
        topt = torch.optim.Adam(lin.parameters(), lr=1e-3, fused=True)
        tx, ty = torch.from_numpy(X), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()

        def tepoch() -> None:
            perm = torch.randperm(n)
            xs, ys = tx[perm], ty[perm]
            for i in range(0, n, batch):
                topt.zero_grad(set_to_none=False)
                loss_fn(lin(xs[i : i + batch]), ys[i : i + batch]).backward()
                topt.step()

        return tepoch
    if impl == "sklearn":
        try:
            from sklearn.linear_model import SGDClassifier
        except ImportError:
            return None
        clf = SGDClassifier(loss="log_loss", learning_rate="adaptive", eta0=0.01,
                            random_state=0)
        clf.partial_fit(X[:batch], y[:batch], classes=np.arange(10))
        return lambda: clf.partial_fit(X, y)
    raise ValueError(f"unknown impl {impl!r}")


def _isolated(workload: str, impl: str, rounds: int) -> float | None:
    """Median seconds of one workload, timed in a fresh Python process of its own.

    Each implementation runs alone: torch's OpenMP threads, OpenBLAS's and Numba's spin-wait
    after their work, and measured in one process on 2 cores they slowed one another up to
    14x, whichever ran next.
    """
    import subprocess
    import sys

    code = ("import sys\nfrom fastgd import _bench\n"
            f"print(_bench._time_one({workload!r}, {impl!r}, {rounds}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900)
    value = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "nan"
    return None if value == "None" else float(value)


def _time_one(workload: str, impl: str, rounds: int) -> float | None:
    if workload == "logistic":
        fn = logistic_epoch(impl)
        return None if fn is None else measure({impl: fn}, rounds, min_time=0.0)[impl]
    fn = model_step(MLP_SHAPES[workload], impl)
    return None if fn is None else measure({impl: fn}, rounds)[impl]


def report_models(rounds: int = 7, out: Callable[[str], None] = print) -> None:
    """Per-step MLP times against torch, scikit-learn and the GEMM floor; a logistic epoch.

    Every figure comes from a process of its own (see :func:`_isolated`).
    """
    out("MLP training step (batch 256, float32, Adam; relu; softmax cross-entropy); "
        "each implementation timed in its own process")
    head = (f"{'model':<9}{'fastgd':>10}{'GEMM floor':>12}{'x floor':>9}{'torch':>16}"
            f"{'sklearn':>16}")
    out(head)
    out("-" * len(head))
    for name in MLP_SHAPES:
        t = {impl: _isolated(name, impl, rounds) for impl in ("fastgd", "gemm", "torch",
                                                               "sklearn")}
        fast = t["fastgd"]
        cells = [(_fmt_time(t[i]).strip() + f" ({t[i] / fast:.2f}x)") if t[i] else "-"
                 for i in ("torch", "sklearn")]
        peers = "".join(f"{c:>16}" for c in cells)
        out(f"{name:<9}{_fmt_time(t['fastgd']):>10}{_fmt_time(t['gemm']):>12}"
            f"{t['fastgd'] / t['gemm']:>8.2f}x{peers}")
    out("")
    out("multinomial logistic regression, one epoch of 200k x 100 (batches of 256)")
    t = {impl: _isolated("logistic", impl, max(3, rounds // 2))
         for impl in ("fastgd", "torch", "sklearn")}
    out("  " + "   ".join(f"{impl} {_fmt_time(v)}" + (
        f" ({v / t['fastgd']:.2f}x)" if impl != "fastgd" else "")
        for impl, v in t.items() if v is not None))


# -- data-parallel ---------------------------------------------------------------------------


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

    shape = MLP_SHAPES["mlp-784"]
    model = MLP(shape, output="multiclass", seed=0)
    opt = fastgd.Adam(model.flat, lr=1e-3)
    dp = DataParallel(model.flat)
    X, y = _classes_data(batch, shape[0], shape[-1])
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
