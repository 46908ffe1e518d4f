"""Weight averaging on its own: CUDA twin of kernels/cpu/average.py."""

from ._elementwise import AVERAGE, rule


@rule("p avg_w avg_w1 avg_div | avg")
def average():
    """avg <- avg + (p - avg) / div (div != 0), else torch's lerp(avg, p, w)."""
    return AVERAGE


@rule("| a b")
def swap():
    """a <-> b, element by element."""
    return "T t = a; a = b; b = t;"
