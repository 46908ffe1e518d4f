"""Adagrad: CUDA twin of kernels/cpu/adagrad.py."""

from ._elementwise import rule


@rule("g raw:gs wd clr eps | p s", average=True)
def adagrad():
    """s <- s + g^2; theta <- theta - clr * g / (sqrt(s) + eps)."""
    return """
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    T si = s + gi * gi;
    s = si;
    p = p - clr * (gi / (sqrt(si) + eps));
    """
