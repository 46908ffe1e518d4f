"""Rprop: CUDA twin of kernels/cpu/rprop.py."""

from ._elementwise import rule


@rule("g raw:gs etaminus etaplus step_min step_max | p prev step_size", average=True)
def rprop():
    """step <- clamp(step f, lo, hi), f = eta+ | eta- | 1 by sign(g prev); p -= sign(g) step."""
    return """
    T gi = gs[0] * g;
    T s = gi * prev;
    T f = s;
    if (s > 0) f = etaplus;
    else if (s < 0) f = etaminus;
    else if (s == 0) f = 1;
    T st = step_size * f;
    if (st < step_min) st = step_min;
    else if (st > step_max) st = step_max;
    step_size = st;
    if (f == etaminus) gi = 0;
    T sg = (gi > 0) ? T(1) : ((gi < 0) ? T(-1) : gi);
    p = p - sg * st;
    prev = gi;
    """
