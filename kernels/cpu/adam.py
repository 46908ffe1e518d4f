"""Adam and AdamW, optionally AMSGrad (torch.optim.Adam / AdamW's update)."""

import numpy as np
from numba import prange

from ._jit import HEAVY_THRESHOLD, as_dtype_of, averaged, rule


@rule(HEAVY_THRESHOLD)
def adam(amsgrad, average):
    """m <- m + (1-b1)(g-m); v <- b2 v + (1-b2) g^2; theta <- theta - step_size m/denom.

    ``denom = sqrt((v or vmax) + eps_root_bc2) / bc2_sqrt + eps``: ``eps_root_bc2`` is
    optax's ``eps_root`` times ``1 - beta2^t`` (0 for torch's form, where adding it changes
    no bit). ``bc2_sqrt`` 1 (the epsilon-hat form, whose bias correction is in
    ``step_size``) skips the division, which changes no bit (x / 1 is x) and saves one of
    the loop's two divisions: the loop is bound by its square root and divisions (11110
    float64 elements: 13.6 against 10.5 us here). Weight decay is either L2 (``l2``, added
    to the gradient) or decoupled (``decay = 1 - lr * wd`` multiplies the parameter);
    callers pass ``l2 = 0`` / ``decay = 1`` for the form not in use. ``vmax`` is only
    touched by the AMSGrad variant.
    """

    def adam(g, gs, l2, decay, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps,
             eps_root_bc2, step_size, avg_w, avg_w1, avg_div, p, m, v, vmax, avg):
        avg_w = as_dtype_of(avg_w, p)
        avg_w1 = as_dtype_of(avg_w1, p)
        avg_div = as_dtype_of(avg_div, p)
        gs = as_dtype_of(gs, p)
        l2 = as_dtype_of(l2, p)
        decay = as_dtype_of(decay, p)
        one_minus_beta1 = as_dtype_of(one_minus_beta1, p)
        beta2 = as_dtype_of(beta2, p)
        one_minus_beta2 = as_dtype_of(one_minus_beta2, p)
        bc2_sqrt = as_dtype_of(bc2_sqrt, p)
        eps = as_dtype_of(eps, p)
        eps_root_bc2 = as_dtype_of(eps_root_bc2, p)
        step_size = as_dtype_of(step_size, p)
        for i in prange(p.size):
            gi = gs * g[i]
            pi = p[i]
            if l2 != 0:
                gi = gi + l2 * pi
            pi = pi * decay
            mi = m[i] + one_minus_beta1 * (gi - m[i])
            m[i] = mi
            vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
            v[i] = vi
            if amsgrad:
                vm = vmax[i]
                if vi > vm or vi != vi:
                    vm = vi
                vmax[i] = vm
                vi = vm
            denom = np.sqrt(vi + eps_root_bc2)
            if bc2_sqrt != 1:  # loop-invariant: LLVM splits the loop on it
                denom = denom / bc2_sqrt
            denom = denom + eps
            pn = pi - step_size * (mi / denom)
            p[i] = pn
            if average:
                avg[i] = averaged(avg[i], pn, avg_w, avg_w1, avg_div)

    return adam
