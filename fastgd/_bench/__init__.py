"""Benchmark workloads shared by the pytest-benchmark suite (bench/) and ``fastgd bench``.

Every figure is reported against peers measured in the same run: a NumPy implementation
written carefully in place (:mod:`.peers`), torch.optim (``fused=True`` where torch has a
fused CPU kernel) when torch is installed, and an in-place axpy kernel (``y += a*x``: 12
bytes per float32 element, read-modify-write like the optimizers) as the memory-bandwidth
baseline. The rules, their benchmark configurations and their peers come from the
registry (:mod:`fastgd.optim.registry`).

Modules: :mod:`.peers` (the NumPy peers), :mod:`.workloads` (what is timed),
:mod:`.timing` (interleaved rounds, one workload per process), :mod:`.reports` (the
tables).
"""

from fastgd._bench.peers import numpy_step
from fastgd._bench.reports import (
    CUDA_SIZES,
    cuda_results_markdown,
    report,
    report_cuda,
    report_distributed,
    report_estimators,
    report_models,
    report_settings,
)
from fastgd._bench.timing import isolated, measure
from fastgd._bench.workloads import (
    ESTIMATOR_DATA,
    ESTIMATOR_SETTINGS,
    FASTGD_THREADS,
    FIRST_LAYER_IMPLS,
    LINEAR_SHAPES,
    MLP_EPOCHS,
    OVERHEAD_SIZES,
    SIZES,
    SKLEARN_THREADS,
    accumulated,
    averaged,
    axpy,
    bytes_per_step,
    clipped,
    device_copy,
    estimator,
    estimator_data,
    first_layer,
    fit_estimator,
    lbfgs,
    linear_eval,
    logistic_epoch,
    logistic_objective,
    model,
    model_sizes,
    model_step,
    muon,
    setting_call,
    setting_data,
    single,
    sparse_table,
)

__all__ = [
    "CUDA_SIZES",
    "ESTIMATOR_DATA",
    "ESTIMATOR_SETTINGS",
    "FASTGD_THREADS",
    "FIRST_LAYER_IMPLS",
    "LINEAR_SHAPES",
    "MLP_EPOCHS",
    "OVERHEAD_SIZES",
    "SIZES",
    "SKLEARN_THREADS",
    "accumulated",
    "averaged",
    "axpy",
    "bytes_per_step",
    "clipped",
    "cuda_results_markdown",
    "device_copy",
    "estimator",
    "estimator_data",
    "first_layer",
    "fit_estimator",
    "isolated",
    "lbfgs",
    "linear_eval",
    "logistic_epoch",
    "logistic_objective",
    "measure",
    "model",
    "model_sizes",
    "model_step",
    "muon",
    "numpy_step",
    "report",
    "report_cuda",
    "report_distributed",
    "report_estimators",
    "report_models",
    "report_settings",
    "setting_call",
    "setting_data",
    "single",
    "sparse_table",
]
