"""Adamax: CUDA twin of kernels/cpu/adamax.py."""

from ._elementwise import rule


@rule("g raw:gs wd one_minus_beta1 beta2 eps clr | p m u", average=True)
def adamax():
    """m <- m + (1-b1)(g-m); u <- max(b2 u, |g| + eps); theta <- theta - clr m/u."""
    return """
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    T mi = m + one_minus_beta1 * (gi - m);
    m = mi;
    T ui = beta2 * u;
    T ai = fabs(gi) + eps;
    if (ai > ui || ai != ai) ui = ai;
    u = ui;
    p = p - clr * (mi / ui);
    """
