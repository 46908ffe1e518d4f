"""In-place axpy (benchmark baseline, accumulation): CUDA twin of kernels/cpu/axpy.py."""

from ._elementwise import rule


@rule("x a | y")
def axpy():
    """y <- y + a x."""
    return "y = y + a * x;"
