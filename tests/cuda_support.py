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
    return gpu_missing() is None


def gpu_missing() -> str | None:
    """Why the GPU tests cannot run here (naming what is missing), or None."""
    cp = cupy_or_none()
    if cp is None:
        return "needs CuPy, which is not installed (pip install cupy-cuda12x)"
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        return f"needs a CUDA GPU: CuPy finds none ({type(e).__name__})"
    return None if count > 0 else "needs a CUDA GPU: CuPy finds none"


NVCC = shutil.which("nvcc")
