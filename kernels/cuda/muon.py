"""Muon's elementwise steps: CUDA twin of kernels/cpu/muon.py (the matmuls are cuBLAS)."""

from ._elementwise import rule


@rule("g raw:gs one_minus_mu mu | buf upd")
def muon_momentum(nesterov):
    """buf <- lerp(buf, g, 1 - mu); upd <- lerp(g, buf, mu) (Nesterov) or buf."""
    upd = ("upd = (fabs(mu) < half) ? gi + mu * (b - gi) : b - (b - gi) * (one - mu);"
           if nesterov else "upd = b;")
    return f"""
    const T one = 1, half = 0.5;
    T gi = gs[0] * g;
    T a = buf;
    T w = one_minus_mu;
    T b = (fabs(w) < half) ? a + w * (gi - a) : gi - (gi - a) * (one - w);
    buf = b;
    {upd}
    """


@rule("x a b | y")
def axpby():
    """y <- a x + b y (the Newton-Schulz iteration's combinations)."""
    return "y = a * x + b * y;"


@rule("raw:x decay step | p")
def muon_apply(transposed):
    """theta <- theta decay - step x (x is the transposed orthogonal update if flagged)."""
    # x is (cols, rows) when transposed: element (r, c) of p reads x[c, r]
    read = ("const ptrdiff_t cols = x.shape()[0], rows = x.shape()[1];\n"
            "    T u = x[(i % cols) * rows + i / cols];" if transposed else "T u = x[i];")
    return f"""
    {read}
    p = p * decay + (-step) * u;
    """
