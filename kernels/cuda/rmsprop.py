"""RMSprop: CUDA twin of kernels/cpu/rmsprop.py."""

from ._elementwise import rule


@rule("g raw:gs wd alpha one_minus_alpha eps lr momentum | p sq ga buf",
      optional={"ga": "centered", "buf": "use_momentum"}, average=True)
def rmsprop(centered, use_momentum):
    """sq <- alpha sq + (1-alpha) g^2; denom = sqrt(sq [- ga^2]) + eps; step g/denom [via buf]."""
    if centered:
        denom = """T gai = ga + one_minus_alpha * (gi - ga);
    ga = gai;
    T denom = sqrt(sqi - gai * gai) + eps;"""
    else:
        denom = "T denom = sqrt(sqi) + eps;"
    if use_momentum:
        upd = """T b = momentum * buf + gi / denom;
    buf = b;
    p = p - lr * b;"""
    else:
        upd = "p = p - lr * (gi / denom);"
    return f"""
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    T sqi = alpha * sq + one_minus_alpha * (gi * gi);
    sq = sqi;
    {denom}
    {upd}
    """
