"""The CUDA twins, checked without a GPU: same names and arguments as the CPU kernels,
every variant constructs, and every CUDA C body compiles with nvcc."""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import subprocess

import pytest
from fastgd.kernels import cpu as cpu_pkg
from fastgd.kernels.cpu._jit import KernelRule

from tests.cuda_support import NVCC, cupy_or_none

cp = cupy_or_none()
pytestmark = pytest.mark.skipif(cp is None, reason="CuPy is not installed")


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


def _cuda_rules():
    from fastgd.kernels.cuda._elementwise import CudaRule

    for module, name, rule in CPU_RULES:
        twin = getattr(importlib.import_module(f"fastgd.kernels.cuda.{module}"), name)
        if isinstance(twin, CudaRule):
            for flags in _flag_sets(module, rule):
                yield module, name, twin, flags


CUDA_VARIANTS = list(_cuda_rules()) if cp is not None else []


def test_every_variant_constructs_without_a_gpu():
    assert CUDA_VARIANTS
    for _, name, twin, flags in CUDA_VARIANTS:
        k = twin.variant(flags)
        assert isinstance(k, cp.ElementwiseKernel)
        assert k.name.startswith(f"fastgd_{name}")
        assert twin.variant(flags) is k  # memoized, never rebuilt per call


def _harness(dtype: str) -> str:
    """Every variant's body inside a plain CUDA kernel, declared as CuPy declares it."""
    out = [f"typedef {dtype} T;",
           "struct Raw { T* p; ptrdiff_t s[2];\n"
           "  __device__ T& operator[](ptrdiff_t j) const { return p[j]; }\n"
           "  __device__ const ptrdiff_t* shape() const { return s; } };"]
    for i, (_, name, twin, flags) in enumerate(CUDA_VARIANTS):
        ins, outs, body = twin.declaration(flags)
        params, prologue = ["int n"], []
        for decl in filter(None, (d.strip() for d in ins.split(","))):
            arg = decl.split()[-1]
            if decl.startswith("raw "):
                params.append(f"Raw {arg}")
            else:
                params.append(f"const T* {arg}_")
                prologue.append(f"const T {arg} = {arg}_[i];")
        for decl in filter(None, (d.strip() for d in outs.split(","))):
            arg = decl.split()[-1]
            if decl.startswith("raw "):
                params.append(f"Raw {arg}")
                continue
            params.append(f"T* {arg}_")
            prologue.append(f"T& {arg} = {arg}_[i];")
        out.append(
            f'extern "C" __global__ void k{i}_{name}({", ".join(params)}) {{\n'
            "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i >= n) return;\n  "
            + "\n  ".join(prologue) + "\n" + body + "\n}"
        )
    from fastgd.kernels.cuda import reduce as R

    for j, red in enumerate((R.sumsq, R.sumpow, R.absmax, R.nonfinite)):
        ins, _, map_expr, reduce_expr, *_ = red._spec
        extra = "const double p = 2.0;" if "float64 p" in ins else ""
        out.append(
            f'extern "C" __global__ void r{j}(const T* x_, double* y) {{\n'
            f"  {extra} const T x = x_[0];\n  double a = {map_expr};\n  double b = a;\n"
            f"  y[0] = {reduce_expr};\n}}"
        )
    return "\n\n".join(out)


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", ["float", "double"])
def test_cuda_bodies_compile_with_nvcc(tmp_path, dtype):
    src = tmp_path / f"fastgd_{dtype}.cu"
    src.write_text(_harness(dtype))
    res = subprocess.run([NVCC, "-std=c++17", "-arch=sm_90", "-c", str(src), "-o",
                          str(tmp_path / "out.o")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
