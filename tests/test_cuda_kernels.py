"""The CUDA twins, checked without a GPU.

- Every CPU kernel has a CUDA twin with the same argument names; every variant constructs.
- Host parity: workloads that cover every rule, option set, dtype, clipping path and model
  kernel run on NumPy arrays, and each launch is repeated with the CUDA twin on copies of
  its arguments, through the real CUDA launcher (``fastgd._backend._launch_cuda``) with
  the kernel body compiled for the host and typed as CuPy types it (``tests/cuda_host.py``).
  The twin must agree with the Numba kernel on that launch.
- Every (kernel, argument types) pair those workloads launch compiles with nvcc as the
  source CuPy itself generates for it, against CuPy's headers.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import pkgutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fastgd.kernels import cpu as cpu_pkg
from fastgd.kernels.cpu._jit import KernelRule

import fastgd
from fastgd import _backend
from fastgd.models import ACTIVATIONS, MLP
from tests.conftest import CASES, DTYPES, RULES, tol
from tests.cuda_support import NVCC, cupy_or_none

cp = cupy_or_none()
pytestmark = pytest.mark.skipif(cp is None, reason="CuPy is not installed")

if cp is not None:
    from fastgd.kernels.cuda._elementwise import CudaRule

    from tests import cuda_host as H

    _missing = H.cupy_internals_missing() or ("no C++ compiler" if H.CXX is None else None)
    needs_host_runner = pytest.mark.skipif(_missing is not None, reason=str(_missing))
else:  # pragma: no cover - without CuPy every test here is skipped
    needs_host_runner = pytest.mark.skip(reason="CuPy is not installed")


def _cpu_rules():
    for info in pkgutil.iter_modules(cpu_pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"fastgd.kernels.cpu.{info.name}")
        for name, obj in vars(mod).items():
            if isinstance(obj, KernelRule):
                yield info.name, name, obj


def _flag_sets(module, rule):
    values = getattr(importlib.import_module(f"fastgd.kernels.cpu.{module}"), "FLAG_VALUES", {})
    names = list(inspect.signature(rule._factory).parameters)
    for combo in itertools.product(*[values.get(n, (False, True)) for n in names]):
        yield tuple(sorted(zip(names, combo)))


def _cpu_arg_names(rule):
    flags = dict.fromkeys(inspect.signature(rule._factory).parameters, False)
    return list(inspect.signature(rule._factory(**flags)).parameters)


CPU_RULES = list(_cpu_rules())


@pytest.mark.parametrize(("module", "name", "rule"), CPU_RULES,
                         ids=[f"{m}.{n}" for m, n, _ in CPU_RULES])
def test_every_cpu_kernel_has_a_cuda_twin_with_the_same_arguments(module, name, rule):
    twin = getattr(importlib.import_module(f"fastgd.kernels.cuda.{module}"), name)
    assert twin.arg_names == _cpu_arg_names(rule)


def _cuda_variants():
    for module, name, rule in CPU_RULES:
        twin = getattr(importlib.import_module(f"fastgd.kernels.cuda.{module}"), name)
        if isinstance(twin, CudaRule):
            for flags in _flag_sets(module, rule):
                yield module, name, twin, flags


CUDA_VARIANTS = list(_cuda_variants()) if cp is not None else []


def test_every_variant_constructs_without_a_gpu():
    assert CUDA_VARIANTS
    for _, name, twin, flags in CUDA_VARIANTS:
        k = twin.variant(flags)
        assert isinstance(k, cp.ElementwiseKernel)
        assert k.name.startswith(f"fastgd_{name}")
        assert twin.variant(flags) is k  # memoized, never rebuilt per call


# ---------------------------------------------------------------------------------------
# Host parity


class _HostKernel:
    """Stands in for a variant's ElementwiseKernel: runs its body on the host."""

    def __init__(self, kernel, shadow):
        self.kernel, self.shadow = kernel, shadow

    def __call__(self, *args):
        self.shadow.record(self.kernel, args)
        H.run_elementwise(self.kernel, *args)


class Shadow:
    """Repeats every NumPy kernel launch and reduction with its CUDA twin on the host.

    Each launch runs the twin first, on copies of the arguments (the gradient scale made a
    1-element array as on the GPU), then the Numba kernel, and compares what the two wrote
    to the kernel's outputs. Reductions compare the combined partial results.
    """

    def __init__(self, monkeypatch):
        from fastgd.optim.base import Optimizer

        # the twins are compared launch by launch: the CPU-only multi-array path is off
        monkeypatch.setattr(Optimizer, "_update_together", lambda self, plan, *a, **k: plan)
        monkeypatch.setattr(Optimizer, "_step_separate", lambda self, *a: None)
        # and so are the multi-array reductions of clipping (the GPU reduces per array)
        # and the grouped launches of weight averages and their swaps
        monkeypatch.setattr(fastgd.clip, "_per_dtype", lambda spans: [s.reshape(-1)
                                                                       for s in spans])
        monkeypatch.setattr(fastgd.averaging, "_together",
                            lambda pairs: [(p, a) for p, a in pairs if p.size])
        monkeypatch.setattr(fastgd.LBFGS, "_multi_array", lambda self, d: False)
        # and the MLP's compiled pass (NumPy only), whose kernels are not launched one by one
        monkeypatch.setattr(MLP, "_compiled_pass", lambda self, X: False)
        self.launched: Counter = Counter()
        self.calls: dict[str, tuple] = {}  # one launch per (kernel, argument types)
        real_variant = CudaRule.variant
        monkeypatch.setattr(CudaRule, "variant",
                            lambda rule, flags=(): _HostKernel(real_variant(rule, flags), self))
        monkeypatch.setattr(_backend, "device_scalar", lambda v, like: np.full(1, v, like.dtype))
        real_launch, real_reduce = _backend.launch, _backend.reduce

        def launch(module, name, flags, *args):
            twin = _backend.kernel_rule(module, name, "cuda")
            composite = getattr(twin, "composite", False)
            if not (isinstance(twin, CudaRule) or composite):  # a CuPy call (data movement)
                return real_launch(module, name, flags, *args)
            memo: dict[int, np.ndarray] = {}  # an argument passed twice stays one array
            copies = tuple(memo.setdefault(id(a), a.copy()) if isinstance(a, np.ndarray) else a
                           for a in args)
            if composite:  # its own launches come back here, each compared
                twin(flags, *copies)
            else:
                _backend._launch_cuda(module, name, flags, copies)
            real_launch(module, name, flags, *args)
            dtype = args[-1].dtype
            used = twin.arg_names if composite else twin.used(flags)
            for n, a, c in zip(twin.arg_names, args, copies):
                if n in twin.out_names and n in used:
                    np.testing.assert_allclose(
                        c, a, **tol(a.dtype), err_msg=f"CUDA {name}{flags}: {n} differs")
            self.launched[(module, name, flags, dtype.name)] += 1
            return None

        def reduce(name, x, *scalars):
            parts = real_reduce(name, x, *scalars)
            twin = _backend.kernel_rule("reduce", name, "cuda")
            kernel, args = twin.bound(x, *scalars)
            self.record(kernel, args)
            got = float(H.run_reduction(kernel, *args))
            want = float(np.max(parts) if name == "absmax" else np.sum(parts))
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0,
                                       err_msg=f"CUDA reduction {name} differs")
            self.launched[("reduce", name, (), x.dtype.name)] += 1
            return parts

        monkeypatch.setattr(_backend, "launch", launch)
        monkeypatch.setattr(_backend, "launch_sized", lambda size, *args: launch(*args))
        monkeypatch.setattr(_backend, "reduce", reduce)

    def record(self, kernel, args):
        sig = tuple((type(a).__name__, getattr(a, "dtype", None), getattr(a, "ndim", None))
                    for a in args)
        self.calls.setdefault(repr((kernel.name, sig)), (kernel, args))


def _shapes():
    return [(0,), (33, 7), (), (101,)]


def optimizer_workload(name, case, dtype, average=None):
    """A few steps of one optimizer case: a None gradient, grad_scale, clipping.

    With ``average`` (an EMA), the steps also average the weights (in the update kernels,
    and by the averaging kernel for the parameter without a gradient), then swap them in
    and out.
    """
    cls, _, options = RULES[name]
    rng = np.random.default_rng(0)
    params = [np.asarray(rng.standard_normal(s), dtype) for s in _shapes()]
    opt = cls(params, **options[case], average=average)
    for t in range(4):
        grads = [np.asarray(rng.standard_normal(s), dtype) for s in _shapes()]
        if t == 1:
            grads[1] = None
        opt.step(grads, grad_scale=0.5 if t == 2 else 1.0, clip_norm=1.0 if t == 3 else None)
    if average is not None:
        with opt.swap_averaged():
            pass


def model_workload(activation, dtype):
    """Forward and backward of small MLPs with every loss, l1 and l2, at ``activation``."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 4)) * 2
    for output, loss, k, y in [
        ("regression", "mse", 2, rng.normal(size=(9, 2))),
        ("regression", "huber", 2, rng.normal(size=(9, 2)) * 3),
        ("regression", "squared_error", 2, rng.normal(size=(9, 2))),
        ("regression", "poisson", 1, rng.poisson(2.0, size=9).astype(float)),
        ("binary", None, 1, rng.integers(0, 2, size=9).astype(float)),
        ("multilabel", None, 3, rng.integers(0, 2, size=(9, 3)).astype(float)),
        ("multiclass", None, 3, rng.integers(0, 3, size=9)),
    ]:
        model = MLP([4, 6, k], activation=activation, output=output, loss=loss, l2=0.1,
                    l1=0.05, dtype=dtype, seed=2, huber_delta=0.7)
        model.loss_and_grad(X, y)
        model.loss_and_grad(X, y, sample_weight=rng.uniform(0.0, 2.0, 9))


def training_utilities_workload(dtype):
    """Clipping by every norm type and by value, and gradient accumulation."""
    rng = np.random.default_rng(2)
    for norm_type in (2.0, 1.0, 3.0, "inf"):
        grads = [np.asarray(rng.standard_normal(s), dtype) for s in _shapes()]
        fastgd.clip_grad_norm_(grads, 0.5, norm_type=norm_type)
    fastgd.clip_grad_value_([np.asarray(rng.standard_normal(50), dtype)], 0.3)
    fastgd.clip.all_finite([np.asarray(rng.standard_normal(20), dtype)])
    p = [np.zeros(12, dtype)]
    acc = fastgd.GradientAccumulator(fastgd.SGD(p, lr=0.1), steps=3)
    for _ in range(3):
        acc.step([np.asarray(rng.standard_normal(12), dtype)])


@needs_host_runner
@pytest.mark.parametrize("average", [None, fastgd.EMA(0.8)], ids=["plain", "ema"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "case"), CASES)
def test_cuda_update_bodies_match_numba_on_the_host(monkeypatch, name, case, dtype, average):
    shadow = Shadow(monkeypatch)
    optimizer_workload(name, case, dtype, average)
    assert sum(n for k, n in shadow.launched.items() if k[0] != "reduce") >= 6
    assert any(k[0] == "reduce" for k in shadow.launched)  # the clipped step


def sparse_workload(dtype):
    """SparseAdam on tables of 1, 2 and 3 dimensions, repeated rows, maximize, a clip."""
    rng = np.random.default_rng(4)
    for shape, hp in [((30,), {}), ((20, 3), {"maximize": True}), ((10, 2, 2), {})]:
        table = np.asarray(rng.standard_normal(shape), dtype)
        opt = fastgd.SparseAdam([table], lr=0.05, **hp)
        for t in range(3):
            g = fastgd.SparseGrad(rng.integers(0, shape[0], 9),
                                  np.asarray(rng.standard_normal((9, *shape[1:])), dtype))
            opt.step([g], clip_norm=1.0 if t == 2 else None)


def muon_workload(dtype):
    """Muon on tall, wide and square matrices, with and without Nesterov."""
    rng = np.random.default_rng(5)
    for hp in ({}, {"nesterov": False, "maximize": True}):
        params = [np.asarray(rng.standard_normal(s), dtype) for s in ((6, 3), (3, 5), (4, 4))]
        opt = fastgd.Muon(params, lr=0.05, **hp)
        for _ in range(2):
            opt.step([np.asarray(rng.standard_normal(p.shape), dtype) for p in params])


def lbfgs_workload(dtype):
    """LBFGS on a quadratic, with and without the line search, over a history that fills."""
    rng = np.random.default_rng(6)
    scale = np.asarray(rng.uniform(0.5, 2.0, 9), dtype)
    for hp in ({}, {"line_search_fn": "strong_wolfe"}):
        params = [np.asarray(rng.standard_normal(s), dtype) for s in ((4,), (5,))]

        def closure(params=params):
            x = np.concatenate(params)
            g = scale * x
            return float(np.dot(g, x)) / 2, [g[:4].copy(), g[4:].copy()]

        opt = fastgd.LBFGS(params, history_size=2, max_iter=4, **hp)
        for _ in range(2):
            opt.step(closure)


@needs_host_runner
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_lbfgs_bodies_match_numba_on_the_host(monkeypatch, dtype):
    from fastgd.optim import lbfgs

    monkeypatch.setattr(lbfgs, "_SMALL", 0)  # small float64 vectors would take NumPy's calls
    shadow = Shadow(monkeypatch)
    lbfgs_workload(dtype)
    assert {k[1] for k in shadow.launched} >= {"two_loop", "axpy", "scaled", "lincomb", "dot"}


@needs_host_runner
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_muon_bodies_match_numba_on_the_host(monkeypatch, dtype):
    shadow = Shadow(monkeypatch)
    muon_workload(dtype)
    names = {k[1] for k in shadow.launched}
    assert {"muon_momentum", "axpby", "muon_apply"} <= names


@needs_host_runner
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_sparse_bodies_match_numba_on_the_host(monkeypatch, dtype):
    shadow = Shadow(monkeypatch)
    sparse_workload(dtype)
    assert shadow.launched[("sparse", "sparse_adam", (), np.dtype(dtype).name)] == 9


@needs_host_runner
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_model_bodies_match_numba_on_the_host(monkeypatch, activation, dtype):
    shadow = Shadow(monkeypatch)
    model_workload(activation, dtype)
    names = {k[1] for k in shadow.launched}
    assert {"bias_act", "act_grad_colsum", "act_grad", "mse", "huber", "bce_logits",
            "softmax_xent", "l2_grad", "axpy", "sumsq", "sumabs"} <= names


@needs_host_runner
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_clip_and_reduction_bodies_match_numba_on_the_host(monkeypatch, dtype):
    shadow = Shadow(monkeypatch)
    training_utilities_workload(dtype)
    names = {k[1] for k in shadow.launched}
    assert {"sumsq", "sumabs", "sumpow", "absmax", "nonfinite", "scale", "clamp",
            "axpy"} <= names


@needs_host_runner
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_clip_coef_matches_the_cpu_formula(dtype):
    from fastgd.kernels.cuda.reduce import clip_coef

    from fastgd.clip import clip_coef as cpu_coef

    for total, power, max_norm, scale in [
        (25.0, 2.0, 1.0, 1.0), (25.0, 2.0, 10.0, 1.0), (8.0, 3.0, 1.0, 0.5),
        (3.0, 0.0, 1.0, -2.0), (0.0, 2.0, 1.0, 1.0), (math.nan, 2.0, 1.0, 1.0),
    ]:
        gs = np.zeros(1, dtype)
        H.run_elementwise(clip_coef, np.array([total]), max_norm, power, scale, gs)
        norm = total if power == 0 else total ** (1 / power)
        want = np.asarray(scale * cpu_coef(max_norm, norm * abs(scale)), dtype)
        np.testing.assert_allclose(gs[0], want, **tol(dtype))


@needs_host_runner
def test_host_parity_catches_a_wrong_cuda_body(monkeypatch):
    from fastgd.kernels.cuda import sgd

    shadow = Shadow(monkeypatch)
    wrong = CudaRule(lambda: "p = p + lr * gs[0] * g;", "g raw:gs wd lr | p", average=True)
    wrong.__name__ = "sgd_wrong_sign"
    monkeypatch.setattr(sgd, "sgd", wrong)
    monkeypatch.setattr(_backend, "_cuda_rules", {})
    with pytest.raises(AssertionError, match="CUDA sgd"):
        fastgd.SGD([np.ones(5)], lr=0.1).step([np.ones(5)])
    assert not shadow.launched


@needs_host_runner
@pytest.mark.parametrize("kernel", ["act_grad_colsum", "l2_grad"])
def test_host_parity_catches_a_wrong_composite_twin(monkeypatch, kernel):
    # a composite twin that leaves out its second launch: its output differs from the
    # fused CPU kernel's
    from fastgd.kernels.cuda import nn
    from fastgd.kernels.cuda._elementwise import composite

    def act_grad_only(z, a, alpha, d, out, *, act):
        _backend.launch("nn", "act_grad", (("act", act),), z, a, alpha, d)

    def axpy_only(w, l2, g, out):
        _backend.launch("axpy", "axpy", (), w, l2, g)

    wrong = (composite("d", "out")(act_grad_only) if kernel == "act_grad_colsum"
             else composite("g", "out")(axpy_only))
    monkeypatch.setattr(nn, kernel, wrong)
    monkeypatch.setattr(_backend, "_cuda_rules", {})
    Shadow(monkeypatch)
    model = MLP([3, 4, 2], output="multiclass", l2=0.1, seed=0)
    with pytest.raises(AssertionError, match=f"CUDA {kernel}"):
        model.loss_and_grad(np.ones((5, 3)), np.array([0, 1, 0, 1, 1]))


@needs_host_runner
def test_host_runner_types_calls_as_cupy_does():
    from fastgd.kernels.cuda import nn, sgd

    p32, g64 = np.ones(4, np.float32), np.ones(4)
    with pytest.raises(TypeError, match="mismatched"):  # one T, two dtypes
        H.run_elementwise(sgd.sgd.variant(()), g64, np.ones(1, np.float32), 0.0, 0.1, p32)
    z, loss = np.zeros((3, 2), np.float32), np.zeros(3, np.float32)
    with pytest.raises(TypeError, match="mismatched"):  # labels must be int64
        H.run_elementwise(nn.softmax_xent.variant(()), np.zeros(3, np.float32), 1.0, z, loss)
    with pytest.raises(ValueError, match="out shape"):  # inputs broadcast, outputs do not
        H.run_elementwise(sgd.sgd.variant(()), np.ones((3, 4), np.float32),
                          np.ones(1, np.float32), 0.0, 0.1, p32)
    np.testing.assert_array_equal(p32, 1.0)


# ---------------------------------------------------------------------------------------
# nvcc on CuPy's generated source


def _every_launch(monkeypatch):
    shadow = Shadow(monkeypatch)
    for dtype in DTYPES:
        for param in CASES:
            optimizer_workload(*param.values, dtype)
            optimizer_workload(*param.values, dtype, average=fastgd.EMA(0.8))
        for activation in ACTIVATIONS:
            model_workload(activation, dtype)
        training_utilities_workload(dtype)
        sparse_workload(dtype)
        muon_workload(dtype)
        lbfgs_workload(dtype)
    from fastgd.kernels.cuda.reduce import clip_coef

    for dtype in DTYPES:
        shadow.record(clip_coef, (np.zeros(1), 1.0, 2.0, 1.0, np.zeros(1, dtype)))
    return shadow.calls


@needs_host_runner
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_cupy_generated_sources_compile_with_nvcc(monkeypatch, tmp_path):
    expected = {twin.variant(flags).name for _, _, twin, flags in CUDA_VARIANTS}
    calls = _every_launch(monkeypatch)
    assert expected <= {k.name for k, _ in calls.values()}  # every variant was launched
    parts = []
    for j, (kernel, args) in enumerate(calls.values()):
        if isinstance(kernel, cp.ReductionKernel):
            src = H.cupy_reduction_source(kernel, *args, name=f"r{j}_{kernel.name}")
        else:
            src = H.cupy_source(kernel, *args, name=f"k{j}_{kernel.name}")
        parts.append(f"namespace n{j} {{\n{src}\n}}\n")  # each has its own typedefs
    src = tmp_path / "fastgd_cupy_kernels.cu"
    src.write_text(H.cupy_headers() + "\n".join(parts))
    res = subprocess.run([NVCC, "-std=c++17", "-arch=sm_90", *H.nvcc_include_options(), "-c",
                          str(src), "-o", str(tmp_path / "out.o")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]


def _multi_sources(monkeypatch):
    """(name, source) of the multi-array kernel of every update launch of an elementwise
    rule in the host-parity workloads (patterns read off the recorded arguments)."""
    from fastgd.optim.registry import RULES as REGISTRY

    stems = {r.kernel for r in REGISTRY.values() if r.cls.elementwise}
    by_name = {twin.variant(flags).name: (module, twin, flags)
               for module, _, twin, flags in CUDA_VARIANTS}
    out = {}
    for kernel, args in _every_launch(monkeypatch).values():
        module, twin, flags = by_name.get(kernel.name, (None, None, None))
        if module not in stems:
            continue
        pattern = "".join("a" if isinstance(a, np.ndarray) else "s" for a in args)
        dtype = next(a.dtype for a in reversed(args) if isinstance(a, np.ndarray))
        name, source = twin.multi_source(flags, pattern, dtype)
        out[name] = source
    return out


@needs_host_runner
@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
def test_multi_array_kernels_compile_with_nvcc(monkeypatch, tmp_path):
    sources = _multi_sources(monkeypatch)
    assert {"fastgd_adam_multi", "fastgd_sgd_momentum_multi"} <= {
        n.split("_multi")[0] + "_multi" for n in sources}
    parts = [f"namespace m{j} {{\n{src}\n}}\n" for j, src in enumerate(sources.values())]
    src = tmp_path / "fastgd_multi_kernels.cu"
    src.write_text("\n".join(parts).replace('extern "C" ', ""))  # C++ linkage per namespace
    res = subprocess.run([NVCC, "-std=c++17", "-arch=sm_90", "-c", str(src), "-o",
                          str(tmp_path / "multi.o")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]


@needs_host_runner
def test_multi_array_kernel_refuses_arguments_it_cannot_take():
    from fastgd.kernels.cuda import nn

    with pytest.raises(NotImplementedError, match="T-typed arguments"):
        nn.softmax_xent.multi_source((), "ssaa", np.float32)


# ---------------------------------------------------------------------------------------
# The GPU suite on emulated CuPy


@needs_host_runner
def test_gpu_suite_passes_on_host_emulated_cupy():
    """tests/test_cuda.py, every test, on CuPy emulated on the host (tests/host_cupy.py)."""
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.host_cupy", "tests/test_cuda.py", "-q",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=900,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    tail = res.stdout[-3000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    summary = res.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "failed" not in summary, tail


@needs_host_runner
def test_host_cupy_emulation_refuses_what_cupy_refuses():
    from tests import host_cupy as E

    a = E.ndarray(np.ones(3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.array(2.0)  # a 0-d NumPy array is an array to CuPy, not a scalar
    np.testing.assert_array_equal((a + np.float64(2.0)).get(), 3.0)  # a NumPy scalar is
    with E.allow_synchronize(False):
        b = a * 2  # stays on the device
        with pytest.raises(E.DeviceSynchronized):
            float(b.sum())
        with pytest.raises(E.DeviceSynchronized):
            b.get()
    v = a[1:]
    assert v.base is a and v[:1].base is a and a.reshape(3, 1).base is a
    np.testing.assert_array_equal(b.get(), 2.0)


@needs_host_runner
def test_host_cupy_emulation_models_two_devices():
    # CuPy allocates on the current device and refuses a kernel argument on another one
    # (no peer access): what fastgd must get right for arrays on GPU 1 while GPU 0 is current
    from tests import host_cupy as E

    assert E.Device().id == 0
    with E.Device(1):
        a = E.ndarray(np.ones(4))
        assert E.Device().id == 1 and (a + 1).device.id == 1
    assert E.Device().id == 0 and a.device.id == 1 and a[1:].device.id == 1
    assert E.ndarray(np.ones(4)).device.id == 0
    here = E.ndarray(np.ones(4))
    for use in (lambda: a + 1, lambda: here + a, lambda: a.sum(), lambda: a.fill(2.0),
                lambda: here.__setitem__(slice(None), a), lambda: a.astype(np.float32)):
        with pytest.raises(ValueError, match=r"resides \(1\) is different from the current "
                                              r"device \(0\)"):
            use()
    assert a.copy().device.id == 0  # a copy lands on the current device, as CuPy's
    with pytest.raises(RuntimeError, match="no CUDA device 2"):
        E.Device(2)


@needs_host_runner
def test_host_builds_fuse_multiply_adds_as_nvrtc_does():
    from fractions import Fraction

    from tests.cuda_host import FMA, run_elementwise

    if not FMA:
        pytest.skip("this CPU has no FMA instructions: the host builds round each step")
    kernel = cp.ElementwiseKernel("float64 a, float64 b, float64 c", "float64 y",
                                  "y = a * b + c;", "fastgd_test_fma")
    a, b, c = np.array([1 + 2.0**-30]), np.array([1 - 2.0**-30]), np.array([-1.0])
    y = np.zeros(1)
    run_elementwise(kernel, a, b, c, y)
    fused = float(Fraction(a[0]) * Fraction(b[0]) + Fraction(c[0]))  # one rounding
    assert a[0] * b[0] + c[0] == 0.0 and fused == -(2.0**-60)  # two roundings differ
    assert y[0] == fused
