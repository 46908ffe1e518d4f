"""Lion: CUDA twin of kernels/cpu/lion.py."""

from ._elementwise import rule


@rule("g raw:gs wd beta1 one_minus_beta1 beta2 one_minus_beta2 lr | p m", average=True)
def lion():
    """c = b1 m + (1-b1) g; theta <- theta - lr (sign(c) + wd theta); m <- b2 m + (1-b2) g."""
    return """
    T gi = gs[0] * g;
    T mi = m;
    T c = beta1 * mi + one_minus_beta1 * gi;
    T s = c;
    if (c > 0) s = 1;
    else if (c < 0) s = -1;
    T pi = p;
    if (wd != 0) s = s + wd * pi;
    p = pi - lr * s;
    m = beta2 * mi + one_minus_beta2 * gi;
    """
