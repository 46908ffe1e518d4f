"""Whether CuPy and a CUDA GPU are present, for skipping."""

from __future__ import annotations

import shutil


def cupy_or_none():
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA install
        return None
    return cupy


def has_gpu() -> bool:
    cp = cupy_or_none()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


NVCC = shutil.which("nvcc")
