"""RAdam: CUDA twin of kernels/cpu/radam.py."""

from ._elementwise import rule


@rule("g raw:gs l2 decay one_minus_beta1 beta2 one_minus_beta2 bc1 lr rect bc2_sqrt eps "
      "| p m v", average=True)
def radam():
    """theta <- theta - lr m/bc1 [* bc2_sqrt / (sqrt(v) + eps) * rect when rect > 0]."""
    return """
    T gi = gs[0] * g;
    T pi = p;
    if (l2 != 0) gi = gi + l2 * pi;
    pi = pi * decay;
    T mi = m + one_minus_beta1 * (gi - m);
    m = mi;
    T vi = beta2 * v + one_minus_beta2 * (gi * gi);
    v = vi;
    T upd = mi / bc1 * lr;
    if (rect > 0) upd = upd * (bc2_sqrt / (sqrt(vi) + eps)) * rect;
    p = pi - upd;
    """
