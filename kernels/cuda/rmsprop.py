"""RMSprop: CUDA twin of kernels/cpu/rmsprop.py."""

from ._elementwise import rule


@rule("g raw:gs wd alpha one_minus_alpha eps lr momentum | p sq ga buf",
      optional={"ga": "centered", "buf": "use_momentum"})
def rmsprop(centered, use_momentum):
    """sq <- alpha sq + (1-alpha) g^2; avg = sqrt(sq [- ga^2]) + eps; step g/avg [via buf]."""
    if centered:
        avg = """T gai = ga + one_minus_alpha * (gi - ga);
    ga = gai;
    T avg = sqrt(sqi - gai * gai) + eps;"""
    else:
        avg = "T avg = sqrt(sqi) + eps;"
    if use_momentum:
        upd = """T b = momentum * buf + gi / avg;
    buf = b;
    p = p - lr * b;"""
    else:
        upd = "p = p - lr * (gi / avg);"
    return f"""
    T gi = gs[0] * g;
    if (wd != 0) gi = gi + wd * p;
    T sqi = alpha * sq + one_minus_alpha * (gi * gi);
    sq = sqi;
    {avg}
    {upd}
    """
