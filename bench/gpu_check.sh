#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU and CuPy installed:
#   bench/gpu_check.sh [OUTDIR]      (default: ./gpu-results)
# 1. the cuda-marked suite (tests/test_cuda.py on the real GPU: parity, no host
#    synchronization, multi-array launches, mixed-dtype clipping, models and fit);
# 2. the host and nvcc checks of the CUDA kernels (tests/test_cuda_kernels.py);
# 3. the GPU benchmark tables and goals (fastgd bench --device cuda), as Markdown.
# Each step's log goes to OUTDIR; the script goes on after a failing step and exits
# non-zero if any failed. The interpreter is $PYTHON, else python3 (a GPU image may have
# no plain `python`).
set -uo pipefail
out=${1:-gpu-results}
py=${PYTHON:-python3}
mkdir -p "$out"
status=0
"$py" -c "import cupy; print(cupy.__version__, cupy.cuda.runtime.getDeviceProperties(0)['name'])" \
    2>&1 | tee "$out/device.log" || status=1
"$py" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.log" \
    || status=1
grep -q " passed" "$out/cuda-tests.log" || status=1  # all skipped: CuPy found no GPU
"$py" -m pytest -q -p no:cacheprovider tests/test_cuda_kernels.py 2>&1 \
    | tee "$out/cuda-kernels.log" || status=1
"$py" -m fastgd bench --device cuda --results "$out/RESULTS.md" 2>&1 | tee "$out/bench.log" \
    || status=1
exit "$status"
