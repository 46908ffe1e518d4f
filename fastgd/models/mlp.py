r"""Autograd-free models: a multilayer perceptron with hand-written backprop.

Parameters and gradients live in a :class:`~fastgd.FlatParams` (``model.flat``), so an
optimizer built on it updates the whole model with one kernel call. Matmuls go to BLAS
(``np.matmul(..., out=)``; cuBLAS for CuPy arrays); the elementwise work around them is the
fused kernels of :mod:`fastgd.models.activations` and :mod:`fastgd.models.losses`.
Workspaces are allocated once per batch size: after the first call at a given batch size,
:meth:`MLP.loss_and_grad` allocates nothing.

Forward, for layers :math:`l = 1..L` with :math:`A_0 = X`:

.. math:: Z_l = A_{l-1} W_l + b_l,\quad A_l = f(Z_l)\ (l < L),\quad A_L = Z_L

Backward, from :math:`\delta_L = \partial L/\partial Z_L` (the loss kernel's output):

.. math:: \nabla W_l = A_{l-1}^\top\delta_l + \lambda_2 W_l + \lambda_1\operatorname{sign}
   W_l,\quad \nabla b_l = \textstyle\sum_{rows}\delta_l,\quad
   \delta_{l-1} = (\delta_l W_l^\top)\odot f'(Z_{l-1})

plus :math:`\tfrac12\lambda_2\|W\|^2 + \lambda_1|W|_1` in the loss (weights only, not
biases).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fastgd import _backend
from fastgd import _validate as V
from fastgd.flat import FlatParams
from fastgd.kernels.codes import ACT_CODES, LINEAR_BLOCK
from fastgd.models.activations import ACTIVATIONS, act_grad_colsum_, bias_act_
from fastgd.models.init import INITIALIZERS, initialize
from fastgd.models.losses import inverse_total, loss_kernel, loss_total, mean_loss_and_grad_

__all__ = ["MLP", "LinearRegression", "LogisticRegression"]

_DEFAULT_LOSS = {"regression": "mse", "binary": "bce", "multilabel": "bce",
                 "multiclass": "softmax_xent"}
_REGRESSION_LOSSES = ("mse", "squared_error", "huber", "poisson")
#: Losses whose model without hidden layers has a one-pass kernel (``_linear_loss_and_grad``)
_ONE_PASS_LOSSES = ("softmax_xent", "bce")



def _range(y: Any) -> tuple[Any, Any]:
    """``(y.min(), y.max())`` on the host: for CuPy one transfer (one synchronization)."""
    if type(y) is np.ndarray:
        return y.min(), y.max()
    lo, hi = _backend.xp_of(y).stack([y.min(), y.max()]).get()
    return lo, hi


#: A column of a CSR input with entries in at least this fraction of its rows is a *dense
#: column* (:meth:`_CSR.with_dense_columns`), where at least :data:`DENSE_COLUMNS_MIN`
#: columns are. Measured here, serially, float64, a 200-row batch's two first-layer products
#: (the CSR kernels against the dense columns by BLAS and the rest by the CSR kernels):
#: MNIST-5k (784 features, 19 % nonzero; 198 columns above 0.4) with 10 / 30 / 100 / 300
#: output columns: 361 / 653 / 935 / 2009 us against 272 / 435 / 662 / 1735 us at 0.4
#: (233 / 465 / 780 / 1771 at 0.3, 334 / 487 / 689 / 1738 at 0.5). Random data, 10 % nonzero
#: but k columns at 60 %, 100 output columns: 784 features, k = 16 / 32 / 64 / 128: 0.99 /
#: 1.05 / 1.06 / 1.20x as fast; 100 features, k = 16 / 32 / 64: 1.05 / 1.18 / 1.16x. The
#: digits with only pixels above 0.85 (64 features, 8 columns above 0.4): 59 against 71 us,
#: slower (the extra gathers and calls cost more than the few columns save).
DENSE_COLUMN_DENSITY = 0.4
#: The fewest dense columns for which :meth:`_CSR.with_dense_columns` splits them off.
DENSE_COLUMNS_MIN = 32


def _dense_columns(counts: Any, rows: int) -> Any:
    """The dense columns of an input of ``rows`` rows with ``counts`` entries per column.

    Those with entries in at least :data:`DENSE_COLUMN_DENSITY` of the rows, where there
    are at least :data:`DENSE_COLUMNS_MIN` of them; else none (an empty index array).
    """
    cols = np.flatnonzero(counts >= DENSE_COLUMN_DENSITY * rows)
    return cols if cols.size >= DENSE_COLUMNS_MIN else cols[:0]


class _CSR:
    """A CSR matrix as the model's kernels take it, or a selection of its rows.

    ``indptr, indices, data`` hold the whole matrix; ``rows`` lists the rows this input
    stands for, in order (all of them, or a mini-batch picked by :meth:`take` without
    copying), and ``shape`` is ``(len(rows), features)``. The matrix and its selections
    share one scratch for the weight gradient's sort, kept between calls.

    Where :meth:`with_dense_columns` has split them off, the columns ``dense_cols`` are
    held as the dense array ``dense`` (every row, those columns) and the CSR arrays hold
    the other columns' entries: the products add BLAS's product of the dense part to the
    CSR kernels'.
    """

    __slots__ = ("_dense_scratch", "_scratch", "_whole", "data", "dense", "dense_cols",
                 "indices", "indptr", "rows", "shape")

    def __init__(self, m: Any, dtype: np.dtype) -> None:
        m = m.tocsr()
        self._set(m.indptr, m.indices, np.asarray(m.data, dtype=dtype), m.shape)

    def _set(self, indptr: Any, indices: Any, data: Any, shape: tuple[int, int]) -> None:
        self.indptr = np.ascontiguousarray(indptr)
        self.indices = np.ascontiguousarray(indices)
        self.data = np.ascontiguousarray(data)
        self.rows = np.arange(shape[0], dtype=np.intp)
        self.shape = tuple(shape)
        self._whole = True
        self._scratch: list[Any] = []
        self.dense: Any = None
        self.dense_cols: Any = None
        self._dense_scratch: dict[Any, Any] = {}

    @classmethod
    def from_dense(cls, X: Any, dense_columns: bool = False) -> _CSR:
        """The nonzeros of a dense 2-D NumPy array, row by row (no SciPy needed).

        ``dense_columns``: as :meth:`with_dense_columns` (its dense columns held dense),
        read from ``X`` directly (``nn.dense_to_csr``).
        """
        X = np.ascontiguousarray(X)
        n, features = X.shape
        dense_at = np.full(features, -1, np.intp)
        # the columns' counts give the total too: one pass over X less (1.4 ms on MNIST-5k)
        counts = np.count_nonzero(X, axis=0) if dense_columns and n else None
        cols = np.arange(0) if counts is None else _dense_columns(counts, n)
        dense_at[cols] = np.arange(cols.size)
        entries = np.count_nonzero(X) if counts is None else int(counts.sum())
        indptr = np.empty(n + 1, np.int64)
        indices, data = np.empty(entries, np.intp), np.empty(entries, X.dtype)
        dense = np.empty((n, cols.size), X.dtype)
        _backend.launch_sized(X.size, "nn", "dense_to_csr", (), X, dense_at, indptr, indices,
                              data, dense)
        kept = int(indptr[-1])
        if kept < entries:  # the dense columns' entries: not kept twice
            indices, data = indices[:kept].copy(), data[:kept].copy()
        out = object.__new__(cls)
        out._set(indptr, indices, data, X.shape)
        if cols.size:
            out.dense, out.dense_cols = dense, cols
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx: Any) -> _CSR:
        """Rows ``idx`` of this input (positions in ``rows``), sharing its arrays."""
        part = object.__new__(_CSR)
        part.indptr, part.indices, part.data = self.indptr, self.indices, self.data
        part.rows = np.ascontiguousarray(self.rows[idx], dtype=np.intp)
        part.shape = (part.rows.size, self.shape[1])
        part._whole = False
        part._scratch = self._scratch
        part.dense, part.dense_cols = self.dense, self.dense_cols
        part._dense_scratch = self._dense_scratch
        return part

    def with_dense_columns(self) -> _CSR:
        """This whole matrix with its dense columns held as a dense array, if it has them.

        A column is dense where its entries number at least :data:`DENSE_COLUMN_DENSITY`
        times the rows; with fewer than :data:`DENSE_COLUMNS_MIN` such columns (or for a
        selection of rows) this matrix is returned as it is. The products then take
        ``dense`` by BLAS (a GEMM reuses each weight it loads; the CSR kernels load a
        weight row per entry) and the remaining entries by the CSR kernels. Duplicate
        entries are summed, as the CSR kernels sum them.
        """
        n, features = self.shape
        if not self._whole or self.dense is not None or n == 0:
            return self
        cols = _dense_columns(np.bincount(self.indices, minlength=features), n)
        if not cols.size:
            return self
        at = np.full(features, -1, np.intp)
        at[cols] = np.arange(cols.size)
        at = at[self.indices]  # each entry's dense column, or -1
        moved = at >= 0
        row_of = np.repeat(np.arange(n), np.diff(self.indptr))
        dense = np.bincount(row_of[moved] * cols.size + at[moved], weights=self.data[moved],
                            minlength=n * cols.size)
        keep = ~moved
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(row_of[keep], minlength=n), out=indptr[1:])
        out = object.__new__(_CSR)
        out._set(indptr, self.indices[keep], self.data[keep], self.shape)
        out.dense = dense.reshape(n, cols.size).astype(self.data.dtype)
        out.dense_cols = cols
        return out

    def _buffer(self, name: str, shape: tuple[int, ...]) -> Any:
        """A scratch array of the dense part's products, kept per name and shape."""
        key = (name, shape)
        buf = self._dense_scratch.get(key)
        if buf is None:
            if len(self._dense_scratch) > 16:  # batch sizes and widths vary: keep a few
                self._dense_scratch.clear()
            buf = self._dense_scratch[key] = np.empty(shape, self.data.dtype)
        return buf

    def _dense_rows(self) -> Any:
        """The dense columns of this input's rows: gathered once per selection."""
        if self._whole:
            return self.dense
        out = self._buffer("x", (self.rows.size, self.dense_cols.size))
        if self._dense_scratch.get("rows") is not self.rows:  # (a cleared scratch: anew)
            _backend.launch("gather", "gather_rows", (), self.dense, self.rows,
                            _backend.NO_ROWS, out)
            self._dense_scratch["rows"] = self.rows
        return out

    def _work(self, cols: int) -> int:
        """About the multiply-adds of a product with ``cols`` output columns."""
        total = self.indptr.size - 1
        return self.data.size * self.rows.size * cols // max(total, 1)

    def matmul(self, w: Any, out: Any) -> None:
        """``out <- X w`` by the CSR kernel (on every thread for large products)."""
        _backend.launch_sized(self._work(w.shape[1]), "nn", "csr_matmul", (), self.indptr,
                              self.indices, self.data, self.rows, w, out)
        if self.dense is not None:  # + the dense columns' part, by BLAS
            cols = self.dense_cols.size
            wd = np.take(w, self.dense_cols, axis=0, out=self._buffer("w", (cols, w.shape[1])))
            part = self._buffer("out", out.shape)
            np.matmul(self._dense_rows(), wd, out=part)
            np.add(out, part, out=out)

    def tmatmul(self, d: Any, out: Any) -> None:
        """``out <- X^T d`` by the CSR kernel (the entries sorted by feature first).

        The sort is kept with the rows it was made for: the whole matrix (L-BFGS's every
        evaluation, LSQR's every product) is sorted once, each new mini-batch anew.
        """
        ip = self.indptr
        scratch = self._scratch  # [starts, batch rows, values, the rows sorted]
        sort = not scratch or scratch[3] is not self.rows or scratch[0].size != out.shape[0] + 1
        if sort:
            entries = (self.data.size if self._whole
                       else int(ip[self.rows + 1].sum() - ip[self.rows].sum()))
            if not scratch or scratch[0].size != out.shape[0] + 1 or scratch[1].size < entries:
                size = entries if self._whole else 2 * entries  # batches vary: room for more
                scratch[:] = [np.empty(out.shape[0] + 1, np.int64), np.empty(size, np.intp),
                              np.empty(size, self.data.dtype), None]
            scratch[3] = self.rows
        _backend.launch_sized(self._work(out.shape[1]), "nn", "csr_tmatmul", (), ip,
                              self.indices, self.data, self.rows, d, int(sort), out,
                              *scratch[:3])
        if self.dense is not None:  # the dense columns' rows (zero so far), by BLAS
            part = self._buffer("grad", (self.dense_cols.size, out.shape[1]))
            np.matmul(self._dense_rows().T, d, out=part)
            out[self.dense_cols] = part


def _is_sparse(X: Any) -> bool:
    """Whether ``X`` is a SciPy sparse matrix or array (without importing SciPy)."""
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


_WORKSPACES = 4  # batch sizes kept at once
#: The largest fraction of nonzero entries for which :meth:`MLP._csr_pays`, by the threads
#: of the CSR kernels (1, 2 or more). The CSR products against BLAS's gather and two GEMMs
#: on one thread, a 200-row batch of random sparsity, 100 hidden units, float64, here: at
#: densities 0.1 / 0.2 / 0.3 / 0.4 / 0.5, 784 features: 5.5 / 3.2 / 1.44 / 1.14 / 0.99x as
#: fast on two threads, 3.2 / 1.7 / 1.08 / 0.81x on one; 100 features: 3.9 / 2.4 / 1.47 /
#: 1.08 / 0.75x on two, 3.0 / 1.63 / 1.11 / 0.62x on one; 64 features: 3.9 / 2.6 / 1.9 /
#: 1.32 / 1.05x on two, 2.9 / 1.75 / 1.24 / 0.97x on one.
SPARSE_DENSITY = {1: 0.25, 2: 0.4}
#: Rows of a large dense X that :meth:`MLP._csr_pays` reads first (every k-th row): where
#: they hold more than twice the nonzeros it allows, X stays dense without being counted
#: whole (counting the 200k x 100 set's 16M entries took 7-10 ms of its fit here).
_SAMPLED_ROWS = 1024


class MLP:
    r"""A multilayer perceptron for regression, binary or multiclass classification.

    Args:
        layer_sizes: ``[n_features, hidden..., n_outputs]``; for ``"binary"`` the last size
            is 1, for ``"multiclass"`` the number of classes.
        activation: hidden activation, one of
            :data:`~fastgd.models.activations.ACTIVATIONS`.
        output: ``"regression"``, ``"binary"`` (one logit), ``"multilabel"`` (one logit
            per label, each a binary cross-entropy) or ``"multiclass"``.
        loss: ``"mse"``, ``"squared_error"`` (half the squared error summed over outputs,
            scikit-learn's gradient), ``"huber"`` or ``"poisson"`` (log link: predictions
            are :math:`e^z`) for regression; fixed to ``"bce"`` (binary, multilabel) and
            ``"softmax_xent"`` (multiclass) otherwise. See :mod:`fastgd.models.losses`.
        init: a weight initializer of :data:`~fastgd.models.init.INITIALIZERS`; default
            ``he_uniform`` for relu-like activations, ``xavier_uniform`` otherwise.
            Biases start at zero.
        l2: L2 penalty :math:`\lambda_2` on the weights.
        l1: L1 penalty :math:`\lambda_1` on the weights.
        alpha: leaky ReLU slope.
        huber_delta: Huber's threshold.
        dtype: float32 or float64.
        seed: seed (or a NumPy Generator) for the initial weights.
        xp: numpy (default) or cupy.

    Example:
        >>> import numpy as np, fastgd
        >>> X = np.random.default_rng(0).normal(size=(64, 4))
        >>> y = (X[:, 0] > 0).astype(np.int64)
        >>> model = MLP([4, 8, 2], output="multiclass", seed=0, dtype=np.float64)
        >>> opt = fastgd.Adam(model.flat, lr=0.05)
        >>> first = model.loss_and_grad(X, y)
        >>> for _ in range(50):
        ...     _ = model.loss_and_grad(X, y); _ = opt.step()
        >>> bool(model.loss(X, y) < first)
        True
    """

    def __init__(self, layer_sizes: Sequence[int], activation: str = "relu",
                 output: str = "regression", loss: str | None = None,
                 init: str | None = None, l2: float = 0.0, l1: float = 0.0,
                 alpha: float = 0.01, huber_delta: float = 1.0, dtype: Any = np.float32,
                 seed: int | np.random.Generator | None = None, xp: Any = np) -> None:
        sizes = list(layer_sizes)
        if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                                 or s < 1 for s in sizes):
            raise ValueError(f"layer_sizes must be >= 2 positive integers, got {layer_sizes!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from "
                             f"{', '.join(ACTIVATIONS)}")
        if output not in _DEFAULT_LOSS:
            raise ValueError(f"output must be 'regression', 'binary', 'multilabel' or "
                             f"'multiclass', got {output!r}")
        loss = loss or _DEFAULT_LOSS[output]
        allowed = _REGRESSION_LOSSES if output == "regression" else (_DEFAULT_LOSS[output],)
        if loss not in allowed:
            raise ValueError(f"loss {loss!r} does not fit output {output!r}; use {allowed}")
        if output == "binary" and sizes[-1] != 1:
            raise ValueError(f"a binary model has 1 output, got {sizes[-1]}")
        if output == "multiclass" and sizes[-1] < 2:
            raise ValueError(f"a multiclass model needs >= 2 outputs, got {sizes[-1]}")
        init = init or ("he_uniform" if activation in ("relu", "leaky_relu", "gelu")
                        else "xavier_uniform")
        if init not in INITIALIZERS:
            raise ValueError(f"unknown initializer {init!r}; choose from "
                             f"{', '.join(INITIALIZERS)}")
        dtype = np.dtype(dtype)
        if dtype not in _backend.FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.layer_sizes = [int(s) for s in sizes]
        self.activation, self.output, self.loss_name, self.init = activation, output, loss, init
        self.l2 = V.nonneg("l2", l2)
        self.l1 = V.nonneg("l1", l1)
        self.alpha = V.real("alpha", alpha)
        self.huber_delta = V.nonneg("huber_delta", huber_delta)
        self.dtype = dtype
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        shapes: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(self.layer_sizes, self.layer_sizes[1:]):
            shapes += [(fan_in, fan_out), (fan_out,)]
        #: Parameters ``W1, b1, W2, b2, ...`` and their gradients, in one buffer each.
        self.flat = FlatParams(shapes, dtype=dtype, xp=xp)
        for k in range(0, len(shapes), 2):
            fan_in, fan_out = shapes[k]
            w = initialize(init, shapes[k], fan_in, fan_out, rng)
            self.flat.params[k][...] = _backend.to_module_of(w.astype(dtype), self.flat.params[k])
        self._ws: dict[int, dict[str, Any]] = {}
        self._linear_parts: dict[int, tuple[Any, ...]] = {}  # per chunk count

    @property
    def _xp(self) -> Any:
        return _backend.xp_of(self.flat.params[0])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ws"] = {}  # workspaces are rebuilt on demand
        state["_linear_parts"] = {}
        return state

    # -- parameters ----------------------------------------------------------------------

    @property
    def params(self) -> tuple[Any, ...]:
        """``W1, b1, W2, b2, ...`` (views into ``flat``)."""
        return self.flat.params

    @property
    def grads(self) -> tuple[Any, ...]:
        """Their gradients, written by :meth:`loss_and_grad`."""
        return self.flat.grads

    @property
    def n_layers(self) -> int:
        """The number of weight layers."""
        return len(self.layer_sizes) - 1

    # -- input checks ----------------------------------------------------------------------

    def _check_X(self, X: Any) -> Any:
        xp = self._xp
        if _is_sparse(X):
            if xp is not np:
                raise TypeError("sparse X is supported for NumPy parameters only")
            if X.ndim != 2 or X.shape[1] != self.layer_sizes[0]:
                raise ValueError(f"X must have shape (n, {self.layer_sizes[0]}), got "
                                 f"{X.shape}")
            return X if isinstance(X, _CSR) else _CSR(X, self.dtype)
        if isinstance(X, _CSR):
            return X
        if _backend.is_cupy(X) != (xp is not np):
            raise TypeError(f"X is a {_backend.kind(X)}, the model's parameters are "
                            f"{'CuPy' if xp is not np else 'NumPy'} arrays")
        X = xp.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"X must have shape (n, {self.layer_sizes[0]}), got {X.shape}")
        if X.dtype != self.dtype or not X.flags.c_contiguous:
            X = xp.ascontiguousarray(X, dtype=self.dtype)
        return X

    def _check_y(self, y: Any, n: int) -> Any:
        xp = self._xp
        y = xp.asarray(y)
        k = self.layer_sizes[-1]
        if self.output == "multiclass":
            if y.shape != (n,) or y.dtype.kind not in "iu":
                raise ValueError(f"y must be {n} integer class labels, got shape {y.shape} "
                                 f"and dtype {y.dtype}")
            lo, hi = _range(y) if n else (0, 0)
            if lo < 0 or hi >= k:
                raise ValueError(f"class labels must be in [0, {k}), got range "
                                 f"[{int(lo)}, {int(hi)}]")
            return xp.ascontiguousarray(y, dtype=np.int64)
        if y.shape not in ((n,), (n, k)) or (y.shape == (n,) and k != 1):
            raise ValueError(f"y must have shape ({n}, {k})" + (f" or ({n},)" if k == 1 else "")
                             + f", got {y.shape}")
        bounded = self.output in ("binary", "multilabel")
        if n and (bounded or self.loss_name == "poisson"):
            lo, hi = _range(y)
            if bounded and not (0 <= lo and hi <= 1):
                raise ValueError("binary targets must be in [0, 1]")
            if self.loss_name == "poisson" and lo < 0:
                raise ValueError("Poisson targets must be >= 0")
        return xp.ascontiguousarray(y.reshape(n, k), dtype=self.dtype)

    # -- forward / backward ------------------------------------------------------------------

    def _workspace(self, n: int) -> dict[str, Any]:
        ws = self._ws.get(n)
        if ws is None:
            if len(self._ws) >= _WORKSPACES:
                self._ws.pop(next(iter(self._ws)))
            xp, dt = self._xp, self.dtype
            sizes = self.layer_sizes[1:]
            ws = self._ws[n] = {
                "Z": [xp.empty((n, s), dt) for s in sizes],
                "A": [xp.empty((n, s), dt) for s in sizes[:-1]],
                "D": [xp.empty((n, s), dt) for s in sizes[:-1]],
                "loss": xp.empty((n, sizes[-1]), dt),
                "loss_rows": xp.empty(n, dt),
                "sumsq": xp.zeros(1, np.float64),
            }
        return ws

    def _forward(self, X: Any) -> tuple[Any, dict[str, Any]]:
        xp = self._xp
        ws = self._workspace(X.shape[0])
        a = X
        p = self.flat.params
        for layer in range(self.n_layers):
            w, b = p[2 * layer], p[2 * layer + 1]
            z = ws["Z"][layer]
            if isinstance(a, _CSR):  # a sparse input: X W by the CSR kernel
                a.matmul(w, z)
            else:
                xp.matmul(a, w, out=z)
            if layer < self.n_layers - 1:
                bias_act_(b, z, ws["A"][layer], self.activation, self.alpha)
                a = ws["A"][layer]
            else:
                bias_act_(b, z, z, "identity")  # z += b without NumPy's broadcast buffer
        return ws["Z"][-1], ws

    @_backend.on_model_device
    def forward(self, X: Any) -> Any:
        """The model output (logits for classifiers) for ``X`` of shape ``(n, features)``."""
        out, _ = self._forward(self._check_X(X))
        return out.copy()

    def _penalty(self, sumsq: Any = None) -> Any:
        """The l2 / l1 penalty: a float, or a 0-d device array for CuPy (no sync).

        ``sumsq``: the weights' sum of squares where the backward pass has summed it (a
        1-element float64 array, the ``l2_grad`` kernel's); None sums it here.
        """
        if not (self.l2 or self.l1):
            return 0.0
        total = 0.0
        if self.l2 and sumsq is not None:
            total += 0.5 * self.l2 * _backend.as_float64(sumsq[0])
        for w in self.flat.params[0::2]:
            if self.l2 and sumsq is None:
                total += 0.5 * self.l2 * _backend.as_float64(
                    _backend.reduce("sumsq", w.reshape(-1)).sum())
            if self.l1:
                total += self.l1 * _backend.as_float64(
                    _backend.reduce("sumabs", w.reshape(-1)).sum())
        return total

    @_backend.on_model_device
    def loss_and_grad(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        r"""The mean loss on ``(X, y)``; writes its gradient into ``flat.grads``.

        Args:
            X: inputs, ``(n, n_features)``: an array, or a SciPy sparse matrix (the first
                layer's products run as CSR kernels, nothing is densified).
            y: targets: ``(n,)`` or ``(n, n_outputs)`` floats (regression; binary and
                multilabel: in [0, 1]), or ``(n,)`` integer labels (multiclass).
            sample_weight: ``(n,)`` weights >= 0 of the rows (None: all 1): the mean
                over rows becomes :math:`\sum_i w_i l_i / \sum_i w_i`.

        Returns:
            The loss, penalties included, as a Python float.
        """
        X, y = self._prepare(X, y)
        return float(self._loss_and_grad(X, y, self._check_weights(sample_weight,
                                                                   X.shape[0])))

    def _csr_pays(self, X: Any, threads: int) -> bool:
        """Whether the first layer multiplies the dense NumPy ``X`` faster as CSR.

        True where ``X`` has few nonzeros: at most :data:`SPARSE_DENSITY` of its entries,
        by the ``threads`` the CSR kernels would run on (a large ``X`` whose sampled rows
        have more than twice that is taken as dense without counting the rest). The CSR
        products' multiply-adds scale with the nonzeros (``X W``, ``X^T delta``), and row
        selections (mini-batches) of a :class:`_CSR` input are views. Models without
        hidden layers keep ``X`` (their one-pass kernel reads it once). The model computes
        the same function either way (sums in another order).
        """
        if type(X) is not np.ndarray or self.n_layers < 2 or X.size == 0:
            return False
        density = SPARSE_DENSITY[min(max(threads, 1), 2)]
        step = X.shape[0] // _SAMPLED_ROWS
        if step > 1:  # a dense X (the usual one) is told by a sample of its rows
            sample = X[::step]
            if np.count_nonzero(sample) > 2 * density * sample.size:
                return False
        return np.count_nonzero(X) <= density * X.size

    def _check_weights(self, sample_weight: Any, n: int) -> Any:
        if sample_weight is None:
            return None
        xp = self._xp
        w = xp.ascontiguousarray(xp.asarray(sample_weight), dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
        if n and (not bool(xp.isfinite(w).all()) or float(w.min()) < 0):
            raise ValueError("sample_weight must be finite and >= 0")
        return w

    def _prepare(self, X: Any, y: Any) -> tuple[Any, Any]:
        """``(X, y)`` checked and converted (dtype, contiguity, label range).

        :func:`fastgd.fit` prepares its data once; row slices of the result then go to
        :meth:`_loss_and_grad` unchecked.
        """
        X = self._check_X(X)
        return X, self._check_y(y, X.shape[0])

    def _correct_units(self, n: int) -> int:
        """How many predictions :meth:`_loss_and_grad`'s ``correct`` counts for ``n`` rows.

        A row's class for a multiclass model, each output for binary and multilabel ones
        (the units of ``fit``'s accuracy); 0 for regression, which has no accuracy.
        """
        if self.output == "regression":
            return 0
        return n if self.output == "multiclass" else n * self.layer_sizes[-1]

    def _loss_and_grad(self, X: Any, y: Any, sample_weight: Any = None, correct: Any = None
                       ) -> Any:
        """:meth:`loss_and_grad` on prepared inputs; the loss stays on the device for CuPy.

        ``correct``: see :meth:`_forward_loss` (the batch scored before its update).
        """
        if (self.n_layers == 1 and self.loss_name in _ONE_PASS_LOSSES
                and not isinstance(X, _CSR) and self._one_pass(X)):
            return self._linear_loss_and_grad(X, y, sample_weight, correct)
        if self._compiled_pass(X):
            return self._compiled_loss_and_grad(X, y, sample_weight, correct)
        loss, delta, ws = self._forward_loss(X, y, sample_weight, correct)  # delta: dL/dZ_L
        xp = self._xp
        p, g = self.flat.params, self.flat.grads
        sumsq = ws["sumsq"]  # the weights' squares, summed by the L2 gradient kernel
        if self.l2:
            sumsq[...] = 0
        _backend.launch("nn", "colsum", (), delta, g[-1])  # the output layer's bias gradient
        for layer in range(self.n_layers - 1, -1, -1):
            a_prev = X if layer == 0 else ws["A"][layer - 1]
            w, gw = p[2 * layer], g[2 * layer]
            if isinstance(a_prev, _CSR):
                a_prev.tmatmul(delta, gw)
            else:
                xp.matmul(a_prev.T, delta, out=gw)
            if self.l2:  # gw += l2 w; sumsq += sum(w^2)
                _backend.launch("nn", "l2_grad", (), w.reshape(-1), self.l2, gw.reshape(-1),
                                sumsq)
            if self.l1:
                gw += self.l1 * xp.sign(w)
            if layer:  # delta of the layer below, and that layer's bias gradient
                d = ws["D"][layer - 1]
                xp.matmul(delta, w.T, out=d)
                act_grad_colsum_(ws["Z"][layer - 1], ws["A"][layer - 1], d, g[2 * layer - 1],
                                 self.activation, self.alpha)
                delta = d
        return loss + self._penalty(sumsq if self.l2 else None)

    def _compiled_pass(self, X: Any) -> bool:
        """Whether this call's pass runs as one compiled call (``kernels/cpu/batch.py``).

        A dense NumPy input of >= 1 row (sample weights and penalties or not), hidden
        layers, and NumPy's BLAS one that ``kernels/cpu/blas.py`` can call (NumPy's
        bundled OpenBLAS): the same calls as the Python pass below, from compiled code (the
        Python pass spends ~20 us a batch dispatching them), each product by NumPy's own
        routine with NumPy's arguments. The pass's kernels have no parallel build
        (``NEVER_PARALLEL``; tested), so the driver's serial builds are the ones the Python
        pass runs.
        """
        if type(X) is not np.ndarray or self.n_layers < 2 or X.shape[0] == 0:
            return False
        from fastgd.kernels.cpu import batch

        return batch.available()

    def _compiled_loss_and_grad(self, X: Any, y: Any, sample_weight: Any, correct: Any
                                ) -> float:
        """:meth:`_loss_and_grad`'s pass as one compiled call (see :meth:`_compiled_pass`).

        The same kernels and products on the same arrays in the same order as the Python
        pass, the same loss and penalty sums. The products' plans (which BLAS routine,
        which arguments: ``blas.plan``) depend only on the arrays' shapes and strides, and
        are kept with the workspace per stride of ``X``.
        """
        from fastgd.kernels.cpu import batch, blas

        ws = self._workspace(X.shape[0])
        plans = ws.setdefault("plans", {}).get(X.strides)
        if plans is None:
            views = batch.product_views(X, self.flat.params, self.flat.grads, ws)
            plans = ws["plans"][X.strides] = np.stack([blas.plan(*v) for v in views])
        out, sumsq = ws["Z"][-1], ws["sumsq"]
        target, loss_buf, (count, cargs) = self._output_calls(out, y, ws)
        kernel, largs, inv = loss_kernel(self.loss_name, out, target, loss_buf,
                                         self.huber_delta, sample_weight)
        # without a count the kernel is not called; its cell is any float64 array
        cargs += (sumsq if correct is None else correct,)
        weights = sumsq[:0] if sample_weight is None else sample_weight
        run = batch.driver(ACT_CODES[self.activation], kernel, count, self.n_layers)
        run(blas.addresses()[self.dtype], plans, X, float(self.alpha), float(self.l2),
            float(self.l1), correct is not None, cargs, largs, weights, sumsq,
            *self.flat.params, *self.flat.grads, *ws["Z"], *ws["A"], *ws["D"])
        return (loss_total(loss_buf, X.shape[0], sample_weight) * inv
                + self._penalty(sumsq if self.l2 else None))

    def _linear_chunks(self, rows: int) -> int:
        """Row chunks of the one-pass linear kernel: a fixed count, whatever the threads."""
        if self._xp is not np:
            return 1
        return max(1, min(_backend.REDUCE_CHUNKS, rows // LINEAR_BLOCK))

    def _one_pass(self, X: Any) -> bool:
        """Whether :meth:`_linear_loss_and_grad` beats BLAS's two passes on ``X``.

        On CuPy arrays always (the twin is cuBLAS around one loss step). On the CPU when
        the kernel runs on every thread: one thread's pass over digits-sized or mini-batch
        data is slower than single-threaded BLAS here (a 256 x 784 float32 batch: 0.57 ms
        against 0.26 ms), while two threads over MNIST-5k took 6.7 ms an evaluation against
        BLAS's 10 ms on one thread (``fit`` keeps BLAS on one thread).
        """
        if self._xp is not np:
            return True
        rows, d = X.shape
        flags = (("softmax", self.loss_name == "softmax_xent"),)
        return (self._linear_chunks(rows) > 1
                and _backend.runs_parallel(rows * d * self.layer_sizes[-1], "nn",
                                           "linear_xent", flags))

    def _linear_loss_and_grad(self, X: Any, y: Any, sample_weight: Any, correct: Any) -> Any:
        """A model without hidden layers: forward, loss and backward in one pass over ``X``.

        ``nn.linear_xent`` computes the logits, the loss and the
        gradients row by row where BLAS would read ``X`` twice (``X W``, ``X^T dZ``) around
        the loss kernel; the rows are split into a fixed number of chunks (results do not
        depend on the thread count), whose float64 partial sums are added here.
        """
        xp = self._xp
        rows, d = X.shape
        w, b = self.flat.params
        gw, gb = self.flat.grads
        k = w.shape[1]
        softmax = self.loss_name == "softmax_xent"
        target = y.reshape(-1) if softmax else y
        inv = inverse_total(self.loss_name, rows, k, sample_weight)
        chunks = self._linear_chunks(rows)
        parts = self._linear_parts.get(chunks)
        if parts is None:  # scratch and partial sums, kept: a later call allocates nothing
            f8, dt = np.float64, self.dtype
            parts = self._linear_parts[chunks] = (
                xp.empty((k, d), dt), xp.empty((chunks, 2, k), dt), xp.empty((chunks, k, d), dt),
                xp.empty((chunks, k, d), f8), xp.empty((chunks, k), f8), xp.empty(chunks, f8),
                xp.empty(chunks, f8), xp.empty((k, d), f8), xp.empty(k, f8),
                xp.empty(0, f8))
        wt, zbuf, gbuf, gt, gbp, hits, losses, gsum, bsum, unweighted = parts
        wt[...] = w.T
        sw = unweighted if sample_weight is None else sample_weight
        _backend.launch_sized(rows * d * k, "nn", "linear_xent",
                              (("softmax", softmax),), X, wt, b, target, sw, inv, zbuf, gbuf,
                              gt, gbp, hits, losses)
        xp.sum(gt, axis=0, out=gsum)
        xp.sum(gbp, axis=0, out=bsum)
        gw[...] = gsum.T
        gb[...] = bsum
        if correct is not None:
            correct += hits.sum()
        if self.l2:
            _backend.launch("axpy", "axpy", (), w.reshape(-1), self.l2, gw.reshape(-1))
        if self.l1:
            gw += self.l1 * xp.sign(w)
        loss = losses.sum() * inv
        return (float(loss) if xp is np else loss) + self._penalty()

    @_backend.on_model_device
    def loss(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The mean loss on ``(X, y)``, penalties included (gradients untouched)."""
        X, y = self._prepare(X, y)
        w = self._check_weights(sample_weight, X.shape[0])
        return float(self._forward_loss(X, y, w)[0] + self._penalty())

    def _forward_loss(self, X: Any, y: Any, sample_weight: Any = None, correct: Any = None
                      ) -> tuple[Any, Any, dict[str, Any]]:
        """Forward and the fused loss kernel on prepared inputs.

        Returns ``(mean loss, dL/dZ_L, workspace)``; dL/dZ_L overwrites the output. The
        loss is a float, or a 0-d device array for CuPy. ``correct``: a 1-element float64
        array (of the arrays' kind) to which the count of correct predictions is added
        before the output is overwritten (classifiers; :meth:`_correct_units`).
        """
        out, ws = self._forward(X)
        target, loss_buf, (count, cargs) = self._output_calls(out, y, ws)
        if correct is not None:
            _backend.launch("nn", count, (), *cargs, correct)
        return mean_loss_and_grad_(self.loss_name, out, target, loss_buf,
                                   self.huber_delta, sample_weight), out, ws

    def _output_calls(self, out: Any, y: Any, ws: dict[str, Any]
                      ) -> tuple[Any, Any, tuple[str, tuple[Any, ...]]]:
        """The loss's target and buffer, the correct-count kernel and its arguments.

        The count's arguments lack its cell: ``correct_labels(z, y | cell)``, or
        ``correct_binary(z, y | cell)`` over every output. Shared by the Python and the
        compiled pass.
        """
        if self.loss_name == "softmax_xent":
            target = y.reshape(-1)
            return target, ws["loss_rows"], ("correct_labels", (out, target))
        return y, ws["loss"], ("correct_binary", (out.reshape(-1), y.reshape(-1)))

    @_backend.on_model_device
    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n, classes)``.

        Binary: ``[1 - p, p]``; multilabel: each label's probability, ``(n, labels)``.
        """
        if self.output == "regression":
            raise TypeError("predict_proba is for classifiers; use predict")
        xp = self._xp
        z = self.forward(X)
        if self.output in ("binary", "multilabel"):
            p1 = 1.0 / (1.0 + xp.exp(-z))
            if self.output == "multilabel":
                return p1
            return xp.concatenate([1.0 - p1, p1], axis=1)
        z -= z.max(axis=1, keepdims=True)
        e = xp.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @_backend.on_model_device
    def predict(self, X: Any) -> Any:
        """Predictions: values (regression, ``(n,)`` for one output) or class labels."""
        z = self.forward(X)
        if self.output == "regression":
            if self.loss_name == "poisson":
                z = self._xp.exp(z)
            return z[:, 0] if z.shape[1] == 1 else z
        if self.output == "binary":
            return (z[:, 0] > 0).astype(np.int64)
        if self.output == "multilabel":
            return (z > 0).astype(np.int64)
        return z.argmax(axis=1)


class LinearRegression(MLP):
    """Linear regression ``y = X W + b`` trained by gradient descent (no hidden layer).

    Args:
        n_features: input size.
        n_outputs: output size.
        loss: ``"mse"`` or ``"huber"``.
        **kwargs: as :class:`MLP` (``l2``, ``l1``, ``dtype``, ``seed``, ``init``, ...).

    Example:
        >>> import numpy as np, fastgd
        >>> model = LinearRegression(3, dtype=np.float64, init="zeros")
        >>> model.predict(np.ones((2, 3)))
        array([0., 0.])
    """

    def __init__(self, n_features: int, n_outputs: int = 1, loss: str = "mse",
                 **kwargs: Any) -> None:
        kwargs.setdefault("init", "xavier_uniform")
        super().__init__([n_features, n_outputs], activation="identity", output="regression",
                         loss=loss, **kwargs)


class LogisticRegression(MLP):
    """Logistic regression: binary (sigmoid, BCE) or multinomial (softmax cross-entropy).

    Args:
        n_features: input size.
        n_classes: 2 for binary (one logit), more for multinomial.
        **kwargs: as :class:`MLP`.

    Example:
        >>> import numpy as np
        >>> model = LogisticRegression(2, n_classes=3, init="zeros")
        >>> model.predict_proba(np.zeros((1, 2))).round(3)
        array([[0.333, 0.333, 0.333]], dtype=float32)
    """

    def __init__(self, n_features: int, n_classes: int = 2, **kwargs: Any) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        kwargs.setdefault("init", "xavier_uniform")
        binary = n_classes == 2
        super().__init__([n_features, 1 if binary else n_classes], activation="identity",
                         output="binary" if binary else "multiclass", **kwargs)
