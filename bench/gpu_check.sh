#!/usr/bin/env bash
# The GPU checks, in one run on a machine with an NVIDIA GPU and CuPy installed:
#   bench/gpu_check.sh [OUTDIR]      (default: ./gpu-results)
# 1. the device and library versions;
# 2. the cuda-marked suite (tests/test_cuda.py on the real GPU: parity, no host
#    synchronization, multi-array launches, mixed-dtype clipping, models and fit);
# 3. the GPU benchmark tables and goals (fastgd bench --device cuda), as Markdown;
# 4. the host and nvcc checks of the CUDA kernels (tests/test_cuda_kernels.py), last: they
#    need no GPU and run wherever CuPy is installed.
# Each step's log goes to OUTDIR as it runs, and each step has a time budget (seconds,
# FASTGD_GPU_BUDGETS="device suite bench kernels", default "45 240 180 90": 555 s in all,
# so that the run and its installation fit in 10 minutes), so a slow step cannot take the
# later ones' time. The script goes on after a failing or timed-out
# step and exits non-zero if any failed. The interpreter is $PYTHON, else python3 (a GPU
# image may have no plain `python`).
set -uo pipefail
out=${1:-gpu-results}
py=${PYTHON:-python3}
read -r t_device t_suite t_bench t_kernels <<< "${FASTGD_GPU_BUDGETS:-45 240 180 90}"
mkdir -p "$out"
status=0
step() {  # step LOG BUDGET COMMAND...: run COMMAND under its budget, log to OUTDIR/LOG
    local log=$1 budget=$2
    shift 2
    timeout --kill-after=10 "$budget" "$@" 2>&1 | tee "$out/$log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "gpu_check: $log stopped after its budget of $budget s" | tee -a "$out/$log"
    fi
    return "$rc"
}
step device.log "$t_device" "$py" -c \
    "import cupy; print(cupy.__version__, cupy.cuda.runtime.getDeviceProperties(0)['name'])" \
    || status=1
step cuda-tests.log "$t_suite" "$py" -m pytest -m cuda -q -p no:cacheprovider \
    tests/test_cuda.py || status=1
grep -q " passed" "$out/cuda-tests.log" || status=1  # all skipped: CuPy found no GPU
step bench.log "$t_bench" "$py" -m fastgd bench --device cuda --results "$out/RESULTS.md" \
    || status=1
step cuda-kernels.log "$t_kernels" "$py" -m pytest -q -p no:cacheprovider \
    tests/test_cuda_kernels.py || status=1
exit "$status"
