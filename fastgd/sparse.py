"""Row-sparse gradients, for embedding tables (``fastgd.SparseAdam``).

A :class:`SparseGrad` says which rows of a parameter received a gradient and what it is:
``indices`` (k int64 row numbers) and ``values`` (``(k, *param.shape[1:])``). Repeated
rows are summed, as torch coalesces a sparse gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["SparseGrad"]


class SparseGrad:
    """A row-sparse gradient: ``values[j]`` is the gradient of row ``indices[j]``.

    Args:
        indices: int64 row numbers, shape ``(k,)`` (NumPy or CuPy, as the parameter).
        values: the rows' gradients, shape ``(k, *param.shape[1:])``, the parameter's dtype.

    Example:
        >>> import numpy as np
        >>> g = SparseGrad(np.array([3, 0, 3]), np.ones((3, 2)))
        >>> c = g.coalesce(); c.indices, c.values
        (array([0, 3]), array([[1., 1.],
               [2., 2.]]))
    """

    __slots__ = ("_coalesced", "indices", "values")

    def __init__(self, indices: Any, values: Any) -> None:
        xp = _backend.xp_of(values)
        if _backend.xp_of(indices) is not xp:
            raise TypeError(f"indices is a {_backend.kind(indices)}, values is a "
                            f"{_backend.kind(values)}; give both as the parameter's kind")
        indices = xp.asarray(indices)
        if indices.ndim != 1 or indices.dtype.kind not in "iu":
            raise ValueError(f"indices must be a 1-D integer array of row numbers, got shape "
                             f"{indices.shape} and dtype {indices.dtype}")
        _backend.check_array(values, "values")
        if values.ndim < 1 or values.shape[0] != indices.shape[0]:
            raise ValueError(f"values must have one row per index: {indices.shape[0]} "
                             f"indices, values of shape {values.shape}")
        self.indices = xp.ascontiguousarray(indices, dtype=np.int64)
        self.values = xp.ascontiguousarray(values)
        self._coalesced: SparseGrad | None = None

    @property
    def dtype(self) -> np.dtype:
        """The values' dtype."""
        return self.values.dtype

    def check_fits(self, param: Any, name: str) -> None:
        """Raise unless this gradient fits ``param`` (kind, dtype, row shape, row range)."""
        if type(self.values) is not type(param):
            raise TypeError(f"{name}.values is a {_backend.kind(self.values)}, the parameter "
                            f"is a {_backend.kind(param)}")
        if param.ndim < 1:
            raise ValueError(f"{name}: a sparse gradient needs a parameter with rows, got "
                             f"shape {param.shape}")
        if self.values.shape[1:] != param.shape[1:]:
            raise ValueError(f"{name}.values has rows of shape {self.values.shape[1:]}, the "
                             f"parameter's rows have shape {param.shape[1:]}")
        if self.values.dtype != param.dtype:
            raise TypeError(f"{name}.values has dtype {self.values.dtype}, the parameter has "
                            f"dtype {param.dtype}")
        if self.indices.size:
            lo, hi = int(self.indices.min()), int(self.indices.max())
            if lo < 0 or hi >= param.shape[0]:
                raise ValueError(f"{name}.indices must be in [0, {param.shape[0]}), got "
                                 f"range [{lo}, {hi}]")

    def coalesce(self) -> SparseGrad:
        """Unique, sorted rows with the values of repeated rows summed (cached)."""
        if self._coalesced is not None:
            return self._coalesced
        idx = self.indices
        xp = _backend.xp_of(idx)
        if idx.size < 2 or bool((idx[1:] > idx[:-1]).all()):
            self._coalesced = self  # already unique and sorted: no copy
            return self
        order = xp.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        starts = xp.flatnonzero(xp.concatenate(
            [xp.ones(1, bool), sorted_idx[1:] != sorted_idx[:-1]])).astype(np.int64)
        rows = self.values.reshape(idx.size, -1)
        out = xp.empty((starts.size, rows.shape[1]), rows.dtype)
        _backend.launch("sparse", "coalesce_rows", (), order, starts, rows, out)
        c = SparseGrad(sorted_idx[starts], out.reshape((starts.size, *self.values.shape[1:])))
        c._coalesced = c
        self._coalesced = c
        return c

    def to_dense(self, shape: tuple[int, ...]) -> Any:
        """The dense gradient of a parameter of ``shape`` (a new array)."""
        c = self.coalesce()
        xp = _backend.xp_of(c.values)
        out = xp.zeros(shape, c.values.dtype)
        out[c.indices] = c.values
        return out

    def __repr__(self) -> str:
        return f"SparseGrad({self.indices.size} rows of shape {self.values.shape[1:]})"
