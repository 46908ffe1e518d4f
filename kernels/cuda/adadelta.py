"""Adadelta: CUDA twin of kernels/cpu/adadelta.py."""

from ._elementwise import rule


@rule("g raw:gs wd rho one_minus_rho eps lr | p u a", average=True)
def adadelta():
    """u <- rho u + (1-rho) g^2; d = sqrt(a+eps)/sqrt(u+eps) g; a <- rho a + (1-rho) d^2."""
    return """
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    T ui = rho * u + one_minus_rho * (gi * gi);
    u = ui;
    T delta = sqrt(a + eps) / sqrt(ui + eps) * gi;
    a = rho * a + one_minus_rho * (delta * delta);
    p = p - lr * delta;
    """
