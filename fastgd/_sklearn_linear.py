r"""LogisticRegression / LinearRegression: scikit-learn's linear_model API, same optimum.

``LogisticRegression`` minimizes scikit-learn's objective,

.. math:: \frac1{\sum_i w_i}\sum_i w_i\,\ell(y_i, x_i W + b)
   + \frac{1}{2 C \sum_i w_i}\|W\|^2

(the log loss of a logit, or the multinomial one for more than two classes; the same
minimizer as :math:`C \sum_i w_i \ell_i + \tfrac12\|W\|^2`), by full-batch L-BFGS
(:class:`fastgd.LBFGS`, strong-Wolfe line search) over a :class:`fastgd.models.MLP` with
no hidden layer: one BLAS matmul and one fused loss-and-gradient kernel per evaluation,
CSR kernels for sparse ``X``. ``LinearRegression`` is the least-squares solution: LAPACK
for dense ``X``, LSQR for sparse ``X`` (never densified).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

import fastgd
from fastgd._threads import blas_threads
from fastgd.models import MLP
from fastgd.models.mlp import _CSR, _is_sparse

__all__ = ["LinearRegression", "LogisticRegression"]

#: scikit-learn's LogisticRegression stops L-BFGS when the loss changes by 64 eps
_FTOL = 64 * np.finfo(float).eps


def _sample_weight(sample_weight: Any, n: int) -> Any:
    """Checked ``(n,)`` float64 weights (None stays None)."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        return np.full(n, float(sample_weight))
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)!")
    if not np.isfinite(w).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (w < 0).any():
        raise ValueError("Negative values in data passed to `sample_weight`")
    if n and not w.any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return w


class LogisticRegression(ClassifierMixin, BaseEstimator):
    r"""Logistic regression with scikit-learn's API, objective and optimum.

    Binary (one logit, ``coef_`` of shape ``(1, n_features)``) or multinomial (a logit
    per class) for more than two classes, with an L2 penalty of strength ``1 / C``
    (``C=np.inf`` or ``penalty=None``: none) on the coefficients, not the intercept.
    Solved by full-batch L-BFGS on fastgd's kernels from zero coefficients, stopping when
    the largest gradient component is at most ``tol`` (scikit-learn's ``gtol``) or the loss
    stops changing. ``X`` may be a SciPy sparse matrix: its products are CSR kernels.

    Args:
        penalty: ``"deprecated"`` (scikit-learn 1.9's default: an L2 penalty), ``"l2"``
            or None (no penalty).
        C: inverse penalty strength, > 0 (``np.inf``: none).
        l1_ratio: 0 only (the L1 and elastic-net penalties need other solvers).
        dual: False only.
        tol: the gradient tolerance.
        fit_intercept: fit ``intercept_``.
        intercept_scaling: accepted for compatibility (liblinear's; no effect here).
        class_weight: None, ``"balanced"`` or ``{class: weight}``: multiplies the sample
            weights.
        random_state: accepted for compatibility (the solver is deterministic).
        solver: ``"lbfgs"``.
        max_iter: L-BFGS iterations.
        verbose: print the solver's progress when > 0.
        warm_start: start from the previous fit's coefficients.
        n_jobs: accepted for compatibility (BLAS threads are fastgd's choice).

    Example:
        >>> import numpy as np
        >>> from fastgd.sklearn import LogisticRegression
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
        >>> clf = LogisticRegression().fit(X, y)
        >>> clf.predict([[0.2], [2.8]])
        array([0, 1])
    """

    def __init__(self, penalty: Any = "deprecated", *, C: float = 1.0, l1_ratio: float = 0.0,
                 dual: bool = False, tol: float = 1e-4, fit_intercept: bool = True,
                 intercept_scaling: float = 1, class_weight: Any = None,
                 random_state: Any = None, solver: str = "lbfgs", max_iter: int = 100,
                 verbose: int = 0, warm_start: bool = False, n_jobs: Any = None) -> None:
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.dual = dual
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.class_weight = class_weight
        self.random_state = random_state
        self.solver = solver
        self.max_iter = max_iter
        self.verbose = verbose
        self.warm_start = warm_start
        self.n_jobs = n_jobs

    def _check_params(self) -> float:
        """The checked parameters; the L2 strength per unit of sample weight (1 / C).

        Warns as scikit-learn 1.9 does for its deprecated ``penalty``, ``l1_ratio=None``
        and ``n_jobs``.
        """
        if self.penalty != "deprecated":
            warnings.warn("'penalty' was deprecated in version 1.8 and will be removed in "
                          "1.10. To avoid this warning, leave 'penalty' set to its default "
                          "value and use 'l1_ratio' or 'C' instead. Use l1_ratio=0 instead of "
                          "penalty='l2', l1_ratio=1 instead of penalty='l1', and C=np.inf "
                          "instead of penalty=None.", FutureWarning, stacklevel=3)
        if self.penalty is None and self.C != 1.0:
            warnings.warn("Setting penalty=None will ignore the C and l1_ratio parameters",
                          UserWarning, stacklevel=3)
        if self.l1_ratio is None:
            warnings.warn("'l1_ratio=None' was deprecated in version 1.8 and will raise an "
                          "error in version 1.10. Please use l1_ratio=0.0 (an L2 penalty).",
                          FutureWarning, stacklevel=3)
        if self.n_jobs is not None:
            warnings.warn("'n_jobs' has no effect since 1.8 and will be removed in 1.10.",
                          FutureWarning, stacklevel=3)
        if self.penalty == "l2" and self.l1_ratio not in (0, 0.0, None):
            warnings.warn(f"Inconsistent values: penalty={self.penalty} with "
                          f"l1_ratio={self.l1_ratio}. penalty is deprecated. Please use C "
                          "and l1_ratio only (not penalty).", UserWarning, stacklevel=3)
        if self.penalty not in ("deprecated", "l2", None):
            raise ValueError(f"penalty={self.penalty!r} is not supported: fastgd's "
                             "LogisticRegression has an L2 penalty or none (penalty=None)")
        if isinstance(self.C, bool) or not isinstance(self.C, numbers.Real) or not (
                self.C > 0):
            raise ValueError(f"The 'C' parameter must be a float in the range (0.0, inf]. "
                             f"Got {self.C!r} instead.")
        if self.l1_ratio not in (0, 0.0, None) and self.penalty != "l2":
            raise ValueError(f"l1_ratio={self.l1_ratio!r} is not supported: fastgd's "
                             "LogisticRegression has an L2 penalty (l1_ratio=0)")
        if self.dual:
            raise ValueError("dual=True is not supported: fastgd's LogisticRegression solves "
                             "the primal (dual=True is liblinear's formulation)")
        if self.solver != "lbfgs":
            raise ValueError(f"solver={self.solver!r} is not supported: fastgd's "
                             "LogisticRegression solves with L-BFGS (solver='lbfgs')")
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not (
                self.tol >= 0) or math.isnan(self.tol):
            raise ValueError(f"The 'tol' parameter must be a float in the range [0.0, inf). "
                             f"Got {self.tol!r} instead.")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) \
                or self.max_iter < 0:
            raise ValueError(f"The 'max_iter' parameter must be an int in the range [0, inf). "
                             f"Got {self.max_iter!r} instead.")
        if self.penalty is None or math.isinf(self.C):
            return 0.0
        return 1.0 / float(self.C)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticRegression:
        """Fit to ``X`` (dense or sparse) and labels ``y``.

        Args:
            X: ``(n_samples, n_features)``.
            y: class labels ``(n_samples,)``.
            sample_weight: ``(n_samples,)`` weights.

        Returns:
            The fitted estimator.
        """
        inv_c = self._check_params()
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=(np.float64, np.float32),
                             order="C", accept_large_sparse=True)
        check_classification_targets(y)
        le = LabelEncoder().fit(y)
        classes = le.classes_
        if len(classes) < 2:
            raise ValueError("This solver needs samples of at least 2 classes in the data, "
                             f"but the data contains only one class: {classes[0]!r}")
        labels = le.transform(y)
        w = _sample_weight(sample_weight, X.shape[0])
        if self.class_weight is not None:
            cw = compute_class_weight(self.class_weight, classes=classes, y=y,
                                      sample_weight=w)
            w = (np.ones(X.shape[0]) if w is None else w) * cw[labels]
        binary = len(classes) == 2
        k = 1 if binary else len(classes)
        old = (getattr(self, "coef_", None), getattr(self, "intercept_", None))
        model = MLP([X.shape[1], k], activation="identity",
                    output="binary" if binary else "multiclass", init="zeros", dtype=X.dtype)
        if self.warm_start and old[0] is not None and old[0].shape == (k, X.shape[1]):
            model.params[0][...] = old[0].T
            if self.fit_intercept:
                model.params[1][...] = old[1]
        total = X.shape[0] if w is None else float(w.sum())
        model.l2 = inv_c / total if total > 0 else 0.0
        Xm, yt = model._prepare(X, labels if not binary else labels.astype(X.dtype))
        w = model._check_weights(w, Xm.shape[0])
        gb = model.grads[1]

        def closure() -> float:
            loss = model._loss_and_grad(Xm, yt, w)
            if not self.fit_intercept:
                gb[...] = 0.0  # the intercept stays 0
            return float(loss)

        self.n_iter_ = np.zeros(1, dtype=np.int32)
        if self.max_iter > 0:
            opt = fastgd.LBFGS(model.flat, max_iter=self.max_iter,
                               max_eval=self.max_iter * 5 // 4 + 50, tolerance_grad=self.tol,
                               tolerance_change=_FTOL, history_size=10,
                               line_search_fn="strong_wolfe", blas_threads=1)
            with np.errstate(over="ignore"):
                opt.step(closure)
            st = opt.state.get(0, {"n_iter": 0})
            self.n_iter_[0] = min(int(st.get("n_iter", 0)), self.max_iter)
            if int(st.get("n_iter", 0)) >= self.max_iter:
                warnings.warn("lbfgs failed to converge after "
                              f"{self.max_iter} iteration(s) (status=1):\nSTOP: TOTAL NO. OF "
                              "ITERATIONS REACHED LIMIT\n\nIncrease the number of iterations "
                              f"to improve the convergence (max_iter={self.max_iter}).",
                              ConvergenceWarning, stacklevel=2)
        W, b = model.params
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise ValueError("the solver produced non-finite coefficients; the input data "
                             "may contain large values and need to be scaled")
        self.classes_ = classes
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b.copy() if self.fit_intercept else np.zeros(k, X.dtype)
        return self

    def decision_function(self, X: Any) -> Any:
        """Logits: ``(n_samples,)`` for two classes, ``(n_samples, n_classes)`` otherwise."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False,
                          dtype=(np.float64, np.float32))
        scores = _linear(X, self.coef_, self.intercept_)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> Any:
        """Predicted class labels."""
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)``, in ``classes_`` order."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            with np.errstate(over="ignore"):
                p = 1.0 / (1.0 + np.exp(-scores))
            return np.vstack([1 - p, p]).T
        z = scores - scores.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict_log_proba(self, X: Any) -> Any:
        """``log(predict_proba(X))``."""
        return np.log(self.predict_proba(X))

    def _predict_proba_lr(self, X: Any) -> Any:
        """One-vs-rest probabilities from the logits (scikit-learn's private method)."""
        prob = self.decision_function(X)
        with np.errstate(over="ignore"):
            prob = 1.0 / (1.0 + np.exp(-prob))
        if prob.ndim == 1:
            return np.vstack([1 - prob, prob]).T
        return prob / prob.sum(axis=1, keepdims=True)

    def sparsify(self) -> LogisticRegression:
        """Store ``coef_`` as a SciPy CSR matrix (predictions accept it)."""
        import scipy.sparse as sp

        check_is_fitted(self)
        self.coef_ = sp.csr_matrix(self.coef_)
        return self

    def densify(self) -> LogisticRegression:
        """Store ``coef_`` as a dense array again."""
        check_is_fitted(self)
        if _is_sparse(self.coef_):
            self.coef_ = self.coef_.toarray()
        return self

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _linear(X: Any, coef: Any, intercept: Any) -> Any:
    """``X coef^T + intercept`` in ``X``'s dtype (a CSR kernel for sparse ``X``)."""
    dtype = X.dtype
    if _is_sparse(coef):
        coef = coef.toarray()
    W = np.ascontiguousarray(np.atleast_2d(coef).T, dtype=dtype)
    out = np.empty((X.shape[0], W.shape[1]), dtype)
    if _is_sparse(X):
        _CSR(X, dtype).matmul(W, out)
    else:
        np.matmul(np.ascontiguousarray(X), W, out=out)
    out += np.asarray(intercept, dtype)
    return out


class LinearRegression(RegressorMixin, BaseEstimator):
    """Ordinary least squares with scikit-learn's API: the least-squares solution.

    Dense ``X``: LAPACK's least squares (``gelsd``, singular values under ``tol`` times
    the largest counted as zero, as scikit-learn's) on the centered data; sparse ``X``:
    LSQR (never densified), to ``tol``. Sample weights
    weigh the squared residuals; ``positive=True`` is non-negative least squares.

    Args:
        fit_intercept: fit ``intercept_`` (the data are centered first).
        copy_X: False lets ``fit`` center (and weigh) a dense float64 ``X`` in place and
            hand it to LAPACK to overwrite, as scikit-learn's may: no copy of ``X`` (it is
            left modified). True (the default) works on a copy; other inputs always do.
        tol: LAPACK's relative singular-value cutoff (dense ``X``); LSQR's ``atol`` and
            ``btol`` (sparse ``X``).
        n_jobs: accepted for compatibility.
        positive: constrain the coefficients to be >= 0 (dense ``X``).

    Example:
        >>> import numpy as np
        >>> from fastgd.sklearn import LinearRegression
        >>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]])
        >>> reg = LinearRegression().fit(X, X @ [2.0, -1.0] + 3.0)
        >>> reg.coef_.round(6), round(float(reg.intercept_), 6)
        (array([ 2., -1.]), 3.0)
    """

    def __init__(self, *, fit_intercept: bool = True, copy_X: bool = True, tol: float = 1e-6,
                 n_jobs: Any = None, positive: bool = False) -> None:
        self.fit_intercept = fit_intercept
        self.copy_X = copy_X
        self.tol = tol
        self.n_jobs = n_jobs
        self.positive = positive

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegression:
        """Fit the least-squares coefficients.

        Args:
            X: ``(n_samples, n_features)``, dense or sparse.
            y: ``(n_samples,)`` or ``(n_samples, n_targets)``.
            sample_weight: ``(n_samples,)`` weights.

        Returns:
            The fitted estimator.
        """
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not (
                self.tol >= 0):
            raise ValueError(f"The 'tol' parameter must be a float in the range [0.0, inf). "
                             f"Got {self.tol!r} instead.")
        # non-negative least squares runs on dense X: scikit-learn's check refuses sparse
        X, y = validate_data(self, X, y, accept_sparse=False if self.positive else "csr",
                             multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32))
        n = X.shape[0]
        w = _sample_weight(sample_weight, n)
        y2 = np.asarray(y, dtype=np.float64).reshape(n, -1)
        sw = np.ones(n) if w is None else w
        total = sw.sum()
        if self.fit_intercept and total > 0:
            # on one thread: NumPy's BLAS threads, woken by a product here, would spin
            # while SciPy's (a BLAS of its own) solve below (100000 x 50: 110 against
            # 79 ms for the least squares alone)
            with blas_threads(1):
                x_off = np.asarray(sw @ X).ravel() / total
                y_off = sw @ y2 / total
        else:
            x_off = np.zeros(X.shape[1])
            y_off = np.zeros(y2.shape[1])
        root = np.sqrt(sw)
        if _is_sparse(X):
            coef = self._sparse_lstsq(X, y2 - y_off, root, x_off)
        else:
            # the centered (and weighted) data, which LAPACK may then overwrite: X itself
            # where copy_X=False allows it, a copy otherwise
            if self.copy_X or X.dtype != np.float64 or not X.flags.writeable:
                Xc = np.subtract(X, x_off, dtype=np.float64)
            else:
                Xc = X
                Xc -= x_off
            yc = y2 - y_off
            if w is not None:
                Xc *= root[:, None]
                yc *= root[:, None]
            if self.positive:
                from scipy.optimize import nnls

                coef = np.stack([nnls(Xc, yc[:, j])[0] for j in range(yc.shape[1])], 1)
                self.rank_, self.singular_ = None, None
            else:
                from scipy.linalg import lstsq

                # scipy's gelsd with cond=tol, as scikit-learn's: singular values
                # under tol times the largest count as zero (rank-deficient X)
                coef, _, self.rank_, self.singular_ = lstsq(
                    Xc, yc, cond=self.tol, overwrite_a=True, overwrite_b=True,
                    check_finite=False)
        coef = coef.T  # (targets, features)
        intercept = y_off - coef @ x_off
        if y.ndim == 1:
            self.coef_ = coef[0]
            self.intercept_ = float(intercept[0]) if self.fit_intercept else 0.0
        else:
            self.coef_ = coef
            self.intercept_ = intercept if self.fit_intercept else np.zeros(coef.shape[0])
        return self

    def _sparse_lstsq(self, X: Any, yc: Any, root: Any, x_off: Any) -> Any:
        """Weighted, centered least squares by LSQR over the sparse ``X`` (never densified).

        LSQR multiplies by one vector at a time, twice an iteration: SciPy's own serial CSR
        products are used there (as scikit-learn does). fastgd's CSR kernels, built for many
        columns (a layer's width), were slower on one: a 20000 x 2000 fit at 1 % nonzeros
        took 29-34 ms against scikit-learn's 11-12 ms (their X^T u sorts the entries by
        feature first, 6-12 ms, and each parallel call waited on a preempted thread for up
        to a scheduler tick on this shared machine).
        """
        from scipy.sparse.linalg import LinearOperator, lsqr

        X = X.tocsr().astype(np.float64, copy=False)
        n, d = X.shape

        def matvec(v: Any) -> Any:
            v = np.asarray(v, np.float64).reshape(d)
            return (X @ v - x_off @ v) * root

        def rmatvec(u: Any) -> Any:
            u = np.asarray(u, np.float64).reshape(n) * root
            return X.T @ u - x_off * u.sum()

        op = LinearOperator((n, d), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
        cols = [lsqr(op, yc[:, j] * root, atol=self.tol, btol=self.tol)[0]
                for j in range(yc.shape[1])]
        self.rank_, self.singular_ = None, None
        return np.stack(cols, 1)

    def predict(self, X: Any) -> Any:
        """``X coef_^T + intercept_``."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False,
                          dtype=(np.float64, np.float32))
        out = _linear(X, self.coef_, np.atleast_1d(self.intercept_))
        return out[:, 0] if np.ndim(self.coef_) == 1 else out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.target_tags.multi_output = True
        return tags
