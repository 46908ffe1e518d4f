"""Adam and AdamW, optionally AMSGrad: CUDA twin of kernels/cpu/adam.py."""

from ._elementwise import rule


@rule("g raw:gs l2 decay one_minus_beta1 beta2 one_minus_beta2 bc2_sqrt eps eps_root_bc2 "
      "step_size "
      "| p m v vmax", optional={"vmax": "amsgrad"}, average=True)
def adam(amsgrad):
    """m <- m + (1-b1)(g-m); v <- b2 v + (1-b2) g^2; theta <- theta - step_size m/denom."""
    ams = """T vm = vmax;
    if (vi > vm || vi != vi) vm = vi;
    vmax = vm;
    vi = vm;""" if amsgrad else ""
    return f"""
    T gi = gs[0] * g;
    T pi = p;
    if (l2 != 0) gi = gi + l2 * pi;
    pi = pi * decay;
    T mi = m + one_minus_beta1 * (gi - m);
    m = mi;
    T vi = beta2 * v + one_minus_beta2 * (gi * gi);
    v = vi;
    {ams}
    T denom = sqrt(vi + eps_root_bc2) / bc2_sqrt + eps;
    p = pi - step_size * (mi / denom);
    """
