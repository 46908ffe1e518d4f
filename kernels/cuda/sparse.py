"""Row-sparse kernels: CUDA twin of kernels/cpu/sparse.py.

``sparse_adam`` runs one thread per element of the touched rows' values (``vals`` sets the
launch size) and indexes the tables (raw, ``(rows, row length)``) itself; ``coalesce_rows``
is CuPy's scatter-add over the rows of each index.
"""

import cupy as cp
import cupyx

from ._elementwise import cupy_call, rule


@cupy_call
def coalesce_rows(order, starts, rows, out):
    """out[u] = sum of rows[order[starts[u] : starts[u + 1]]] (the rows of one index)."""
    n = order.size
    first = cp.zeros(n, cp.int64)
    first[starts[1:]] = 1
    slot = cp.empty(n, cp.int64)
    slot[order] = cp.cumsum(first)
    out.fill(0)
    cupyx.scatter_add(out, slot, rows)


@rule("raw.int64:rows vals raw:gs one_minus_beta1 one_minus_beta2 eps step_size "
      "| raw:p raw:m raw:v")
def sparse_adam():
    """For each touched row r: m, v as Adam; theta <- theta - step_size m / (sqrt(v) + eps)."""
    return """
    const ptrdiff_t cols = p.shape()[1];
    const ptrdiff_t e = rows[i / cols] * cols + i % cols;
    T gi = gs[0] * vals;
    T mi = m[e] + (gi - m[e]) * one_minus_beta1;
    m[e] = mi;
    T vi = v[e] + (gi * gi - v[e]) * one_minus_beta2;
    v[e] = vi;
    p[e] = p[e] + (-step_size) * (mi / (sqrt(vi) + eps));
    """
