"""SGD, with and without momentum: CUDA twin of kernels/cpu/sgd.py."""

from ._elementwise import rule


@rule("g raw:gs wd lr | p", average=True)
def sgd():
    """theta <- theta - lr * (gs * g + wd * theta)."""
    return """
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    p = p - lr * gi;
    """


@rule("g raw:gs wd lr momentum damp | p buf", average=True)
def sgd_momentum(nesterov):
    """buf <- momentum * buf + damp * g; theta <- theta - lr * (g + momentum * buf | buf)."""
    step = "gi = gi + momentum * b;" if nesterov else "gi = b;"
    return f"""
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    T b = momentum * buf + damp * gi;
    buf = b;
    {step}
    p = p - lr * gi;
    """
