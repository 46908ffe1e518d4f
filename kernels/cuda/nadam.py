"""NAdam: CUDA twin of kernels/cpu/nadam.py."""

from ._elementwise import rule


@rule("g raw:gs l2 decay one_minus_beta1 beta2 one_minus_beta2 bc2 eps c_grad c_avg | p m v",
      average=True)
def nadam():
    """theta <- theta - c_grad g/denom - c_avg m/denom, denom = sqrt(v / bc2) + eps."""
    return """
    T gi = gs[0] * g;
    T pi = p;
    if (l2 != 0) gi = gi + l2 * pi;
    pi = pi * decay;
    T mi = m + one_minus_beta1 * (gi - m);
    m = mi;
    T vi = beta2 * v + one_minus_beta2 * (gi * gi);
    v = vi;
    T denom = sqrt(vi / bc2) + eps;
    pi = pi - c_grad * (gi / denom);
    p = pi - c_avg * (mi / denom);
    """
