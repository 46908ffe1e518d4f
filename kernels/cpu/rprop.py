"""Rprop, resilient backpropagation (torch.optim.Rprop's update)."""

import numpy as np
from numba import prange

from ._jit import LIGHT_THRESHOLD, as_dtype_of, averaged, rule


@rule(LIGHT_THRESHOLD)
def rprop(average):
    """step <- clamp(step * f, lo, hi), f = eta+ | eta- | 1 by sign(g prev); theta -= sign(g) step.

    Where the sign flipped (``f = eta-``) the gradient counts as 0: no move, and ``prev``
    becomes 0. A NaN product keeps NaN (as torch, whose masks skip it).
    """

    def rprop(g, gs, etaminus, etaplus, step_min, step_max, avg_w,
              avg_w1, avg_div, p, prev, step_size,
              avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        etaminus = as_dtype_of(etaminus, p)
        etaplus = as_dtype_of(etaplus, p)
        step_min = as_dtype_of(step_min, p)
        step_max = as_dtype_of(step_max, p)
        zero = as_dtype_of(0.0, p)
        one = as_dtype_of(1.0, p)
        for i in prange(p.size):
            gi = gs * g[i]
            s = gi * prev[i]
            f = s
            if s > zero:
                f = etaplus
            elif s < zero:
                f = etaminus
            elif s == zero:
                f = one
            st = step_size[i] * f
            if st < step_min:
                st = step_min
            elif st > step_max:
                st = step_max
            step_size[i] = st
            if f == etaminus:
                gi = zero
            pn = p[i] - np.sign(gi) * st
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)
            prev[i] = gi

    return rprop
