"""Ratio tables for the pytest-benchmark suites, printed after pytest-benchmark's own.

Every benchmark records ``extra_info`` (rule, n, impl, bytes). At the end of the run the
medians are combined into the figures the README reports: GB/s, the fraction of the
in-place axpy bandwidth measured in the same run, and the speed-up over each peer.
"""

from __future__ import annotations

from collections import defaultdict

from fastgd._bench import SKLEARN_THREADS


def _medians(config):
    session = getattr(config, "_benchmarksession", None)
    out = {}
    for bench in getattr(session, "benchmarks", []) or []:
        info = bench.extra_info
        if "impl" in info and bench.stats is not None:
            out[(info.get("suite"), info.get("rule"), info.get("n"), info["impl"])] = (
                bench.stats.median, info)
    return out


def _one_line(w, rows, suite, base, peers, title):
    """A line per row of ``suite``: ``base``'s median time, each peer's and its ratio."""
    for key in sorted(k for k in rows if k[0] == suite):
        v = rows[key]
        if base in v:
            t = v[base][0]
            w("")
            w(f"{title(key)}: {base} {t * 1e6:.1f} us"
              + "".join(f", {impl} {v[impl][0] * 1e6:.1f} us ({v[impl][0] / t:.2f}x)"
                        for impl in peers if impl in v))


def _section(w, rows, suite, title):
    """The row keys of ``suite``, in order; writes the section's title if it has any."""
    keys = sorted(k for k in rows if k[0] == suite)
    if keys:
        w("")
        w(title)
    return keys


def _faster_sklearn(v):
    """The faster of scikit-learn's thread settings among a row's timings (None: none ran)."""
    peers = [impl for impl in SKLEARN_THREADS if impl in v]
    return min(peers, key=lambda impl: v[impl][0]) if peers else None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    med = _medians(config)
    if not med:
        return
    w = terminalreporter.write_line
    rows = defaultdict(dict)
    for (suite, rule, n, impl), (t, info) in med.items():
        rows[(suite, rule, n)][impl] = (t, info)
    axpy = {n: v["axpy"] for (s, r, n), v in rows.items() if s == "single" and "axpy" in v}
    singles = sorted(k for k in rows if k[0] == "single" and k[1] != "axpy")
    if singles:
        w("")
        w("fastgd vs peers (medians of this run; GB/s counts g read + param/state read+write)")
        w(f"{'rule':<9}{'n':>10}{'fastgd us':>12}{'GB/s':>8}{'x axpy':>8}{'vs numpy':>10}"
          f"{'vs torch':>10}")
        for key in singles:
            v = rows[key]
            if "fastgd" not in v:
                continue
            t, info = v["fastgd"]
            gbs = info["bytes"] / t / 1e9
            frac = ""
            if key[2] in axpy:
                ta, ia = axpy[key[2]]
                frac = f"{gbs / (ia['bytes'] / ta / 1e9):8.2f}"
            vs = [f"{v[p][0] / t:9.2f}x" if p in v else f"{'-':>10}" for p in ("numpy", "torch")]
            w(f"{key[1]:<9}{key[2]:>10}{t * 1e6:12.1f}{gbs:8.1f}{frac:>8}{vs[0]}{vs[1]}")
    for key in _section(w, rows, "model", "300-tensor model step: FlatParams and a list of "
                        "the arrays vs torch over the separate tensors"):
        v = rows[key]
        t = v["fastgd"][0]
        parts = [f"{impl} {v[impl][0] * 1e6:9.1f} us" for impl in sorted(v)]
        tl = v["fastgd-list"][0] if "fastgd-list" in v else None
        tv = v["fastgd-views"][0] if "fastgd-views" in v else None
        ratios = ([f"list/flat {tl / t:.2f}x"] if tl else []) + (
            [f"views/flat {tv / t:.2f}x"] if tv else []) + (
            [f"torch/flat {v['torch'][0] / t:.2f}x"]
            + ([f"torch/list {v['torch'][0] / tl:.2f}x"] if tl else [])
            if "torch" in v else [])
        w(f"{key[1]:<9}" + "  ".join(parts) + ("  (" + ", ".join(ratios) + ")"
                                               if ratios else ""))
    _one_line(w, rows, "accumulate", "fastgd", ("fastgd-list", "torch"),
              lambda key: "Gradient accumulation (300 tensors, a micro-batch of 4)")
    _one_line(w, rows, "average", "fused", ("separate", "torch"),
              lambda key: f"Adam + EMA of the weights, n={key[2]}")
    for key in _section(w, rows, "estimators", "fastgd.sklearn vs scikit-learn at its faster "
                        "thread setting (median fit time, held-out accuracy)"):
        v = rows[key]
        peer = _faster_sklearn(v)
        if "fastgd" in v and peer:
            (t, i), (ts, isk) = v["fastgd"], v[peer]
            jobs = v.get("fastgd-n_jobs=-1")
            w(f"{key[1]:<9}{key[2]:<10} fastgd {t:8.3f} s  {peer} {ts:8.3f} s  "
              f"({ts / t:.2f}x)  accuracy {i['accuracy']:.4f} vs {isk['accuracy']:.4f}"
              + (f"  n_jobs=-1 {jobs[0]:8.3f} s ({ts / jobs[0]:.2f}x)" if jobs else ""))
    for key in _section(w, rows, "settings", "fastgd.sklearn vs scikit-learn in other "
                        "settings, at its faster thread setting (median call)"):
        v = rows[key]
        peer = _faster_sklearn(v)
        if "fastgd" in v and peer:
            t, ts = v["fastgd"][0], v[peer][0]
            w(f"{key[1]:<24}{key[2]:<19} fastgd {t * 1e3:9.2f} ms  {peer} {ts * 1e3:9.2f} ms"
              f"  ({ts / t:.2f}x)")
    for key in _section(w, rows, "linear", "one-pass loss and gradient (no hidden layer, "
                        "10 classes, float64) vs two BLAS passes"):
        v = rows[key]
        if "one-pass" not in v:
            continue
        t = v["one-pass"][0]
        w(f"{key[1]:<10}{key[2]:>8} rows  one-pass {t * 1e3:8.3f} ms"
          + "".join(f"  {impl} {v[impl][0] * 1e3:8.3f} ms ({v[impl][0] / t:.2f}x)"
                    for impl in ("one-pass-1thread", "blas", "blas-2threads") if impl in v))
    for key in _section(w, rows, "elementwise", "model kernels (serial, as in fit) vs NumPy's "
                        "vectorized calls: activations on 200 x 100, softmax on 256 x 10, "
                        "bce on 20000"):
        v = rows[key]
        if "fastgd" in v and "numpy" in v:
            t, tn = v["fastgd"][0], v["numpy"][0]
            w(f"{key[1]:<21}{key[2]:>8}  fastgd {t * 1e6:8.1f} us  numpy {tn * 1e6:8.1f} us"
              f"  ({tn / t:.2f}x)")
    for key in _section(w, rows, "threshold",
                        "serial vs parallel kernels (the parallel threshold)"):
        v = rows[key]
        ts, tp = v["serial"][0], v["parallel"][0]
        w(f"{key[1]:<14}{key[2]:>10}  serial {ts * 1e6:8.1f} us  parallel {tp * 1e6:8.1f} us"
          f"  {'parallel' if tp < ts else 'serial'} wins ({ts / tp:.2f}x)")
