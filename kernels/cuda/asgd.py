"""ASGD: CUDA twin of kernels/cpu/asgd.py."""

from ._elementwise import rule


@rule("g raw:gs wd decay eta mu | p ax", average=True)
def asgd():
    """theta <- theta (1 - lambd eta) - eta (g + wd theta); ax <- theta, or ax + mu (theta - ax)."""
    return """
    T pi = p;
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * pi;
    pi = pi * decay;
    pi = pi - eta * gi;
    p = pi;
    if (mu == 1) ax = pi;
    else ax = ax + (pi - ax) * mu;
    """
