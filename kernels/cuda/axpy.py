"""In-place axpy (benchmark baseline, accumulation) and L-BFGS's vector updates: CUDA twin
of kernels/cpu/axpy.py."""

from ... import _backend
from ._elementwise import composite, rule


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


@composite("d")
def two_loop(Y, S, order, ro, h_diag, parts, g, d):
    """d <- -H g: the recursion as one dot reduction and one axpy launch per pair and loop.

    ``order`` and ``ro`` are host arrays; each inner product is read on the host (the
    next coefficient needs it).
    """
    del parts  # the reductions keep their own partial sums
    m = len(order)
    al = [0.0] * m
    _backend.launch("axpy", "scaled", (), g, -1.0, d)
    for j in range(m - 1, -1, -1):
        r = int(order[j])
        al[j] = float(_backend.reduce("dot", S[r], d).sum()) * float(ro[j])
        _backend.launch("axpy", "axpy", (), Y[r], -al[j], d)
    _backend.launch("axpy", "scaled", (), d, h_diag, d)
    for j in range(m):
        r = int(order[j])
        be = float(_backend.reduce("dot", Y[r], d).sum()) * float(ro[j])
        _backend.launch("axpy", "axpy", (), S[r], al[j] - be, d)
