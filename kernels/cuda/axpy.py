"""In-place axpy (benchmark baseline, accumulation): CUDA twin of kernels/cpu/axpy.py."""

from ._elementwise import rule


@rule("x a | y")
def axpy():
    """y <- y + a x."""
    return "y = y + a * x;"


@rule("x a | out")
def scaled():
    """out <- a x."""
    return "out = a * x;"


@rule("x y a b | out")
def lincomb():
    """out <- a x + b y."""
    return "out = a * x + b * y;"
