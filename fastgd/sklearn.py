"""scikit-learn estimators backed by fastgd models, optimizers and the training loop.

``MLPClassifier``, ``MLPRegressor``, ``LogisticRegression`` and ``LinearRegression``
(gradient-descent fitted) follow scikit-learn's conventions: ``fit`` / ``partial_fit`` /
``predict`` / ``predict_proba`` / ``score``, ``get_params`` / ``set_params``, ``classes_``,
``n_features_in_``, ``loss_curve_``, ``n_iter_``, input validation with scikit-learn's own
checks; they clone, pickle, and work in ``Pipeline`` and ``GridSearchCV``. This module
needs scikit-learn (``pip install scikit-learn``).

Example:
    >>> import numpy as np
    >>> from fastgd.sklearn import MLPClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = np.where(X[:, 0] > 0, "a", "b")
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100,
    ...                     random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

import fastgd
from fastgd import _validate as V
from fastgd.models import MLP
from fastgd.optim import by_name

__all__ = ["LinearRegression", "LogisticRegression", "MLPClassifier", "MLPRegressor"]


def _store(estimator: Any, args: dict[str, Any]) -> None:
    """Set ``__init__``'s arguments as attributes, unchanged (scikit-learn's convention)."""
    for name, value in args.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


class _Base(BaseEstimator):
    """Shared fitting logic; subclasses set the output kind and the hidden layers."""

    def _param(self, name: str, default: Any) -> Any:
        """A parameter some estimators do not have (e.g. no hidden layers in regressions)."""
        return getattr(self, name, default)

    # subclass hooks ------------------------------------------------------------------------
    _output = "regression"

    def _hidden(self) -> list[int]:
        sizes = self._param("hidden_layer_sizes", ())
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive, got {self.hidden_layer_sizes}")
        return [int(s) for s in sizes]

    def _targets(self, y: Any, fitting: bool) -> tuple[Any, int, str]:
        y = np.asarray(y, dtype=np.float64)
        self._y_2d = y.ndim == 2
        y2 = y.reshape(len(y), -1)
        return y2, y2.shape[1], "regression"

    # fitting ------------------------------------------------------------------------------------
    def _optimizer(self, flat: Any) -> Any:
        solvers = {"adam": lambda: fastgd.Adam(flat, lr=self.learning_rate_init),
                   "sgd": lambda: fastgd.SGD(flat, lr=self.learning_rate_init,
                                             momentum=self._param("momentum", 0.9),
                                             nesterov=self._param("momentum", 0.9) > 0)}
        name = self.solver
        if name in solvers:
            return solvers[name]()
        try:
            cls = by_name(name)
        except ValueError as e:
            raise ValueError(f"unknown solver {name!r}; use 'adam', 'sgd' or {e}") from None
        return cls(flat, lr=self.learning_rate_init)

    def _init_model(self, n_features: int, n_out: int, output: str) -> None:
        dtype = np.dtype(self.dtype)
        rng = np.random.default_rng(self.random_state)
        model = MLP([n_features, *self._hidden(), n_out],
                    activation=self._param("activation", "identity"),
                    output=output, init="xavier_uniform", dtype=dtype, seed=rng)
        # both built before either is set: a bad solver leaves the estimator unfitted
        self.optimizer_ = self._optimizer(model.flat)
        self.model_ = model
        self._rng = rng
        self.loss_curve_: list[float] = []
        self.n_iter_ = 0
        self.t_ = 0

    def _batch(self, n: int) -> int:
        if self.batch_size == "auto":
            return min(200, n)
        b = int(self.batch_size)
        if b < 1:
            raise ValueError(f"batch_size must be >= 1 or 'auto', got {self.batch_size!r}")
        return min(b, n)

    def _check_params(self) -> None:
        """Refuse bad hyperparameters before any data is touched (scikit-learn's rule)."""
        V.nonneg("alpha", self.alpha)
        V.lr(self.learning_rate_init, "learning_rate_init")
        V.nonneg("tol", self.tol)
        frac = self._param("validation_fraction", 0.1)
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {frac!r}")
        n = self.n_iter_no_change
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_iter_no_change must be an integer >= 1, got {n!r}")

    def fit(self, X: Any, y: Any) -> _Base:
        """Fit from scratch for up to ``max_iter`` epochs."""
        self._check_params()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=self._output ==
                             "regression", dtype=[np.float64, np.float32])
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        yt, n_out, output = self._targets(y, fitting=True)
        self._init_model(X.shape[1], n_out, output)
        return self._run(X, yt, self.max_iter)

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> _Base:
        """One epoch over ``(X, y)``, continuing from the current state."""
        first = not hasattr(self, "model_")
        self._check_params()
        X, y = validate_data(self, X, y, multi_output=True, reset=first,
                             y_numeric=self._output == "regression",
                             dtype=[np.float64, np.float32])
        if first and self._output == "classification":
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = np.unique(classes)
        yt, n_out, output = self._targets(y, fitting=first)
        if first:
            self._init_model(X.shape[1], n_out, output)
        return self._run(X, yt, 1)

    def _run(self, X: Any, y: Any, epochs: int) -> _Base:
        dtype = np.dtype(self.dtype)
        X = np.ascontiguousarray(X, dtype=dtype)
        validation = None
        if self._param("early_stopping", False) and epochs > 1:
            n_val = max(1, int(self._param("validation_fraction", 0.1) * len(X)))
            idx = self._rng.permutation(len(X))
            validation = (X[idx[:n_val]], y[idx[:n_val]])
            X, y = X[idx[n_val:]], y[idx[n_val:]]
        # scikit-learn's alpha: 0.5 * alpha * ||W||^2 / (samples in the batch)
        self.model_.l2 = float(self.alpha) / self._batch(len(X))
        stop = fastgd.EarlyStopping(
            monitor="val_loss" if validation else "loss", patience=self.n_iter_no_change,
            min_delta=self.tol, restore_best=validation is not None)
        hist = fastgd.fit(self.model_, self.optimizer_, X, y, epochs=epochs,
                          batch_size=self._batch(len(X)), shuffle=self.shuffle, seed=self._rng,
                          validation_data=validation,
                          early_stopping=stop if epochs > 1 else None, progress=False)
        self.loss_curve_ += hist["loss"]
        self.n_iter_ += hist.epochs
        self.t_ += hist.steps
        return self

    def _predict_raw(self, X: Any) -> Any:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.ascontiguousarray(X, dtype=np.dtype(self.dtype))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        opt = state.pop("optimizer_", None)
        if opt is not None:
            state["_optimizer_state"] = opt.state_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        sd = state.pop("_optimizer_state", None)
        self.__dict__.update(state)
        if sd is not None:
            self.optimizer_ = self._optimizer(self.model_.flat)
            self.optimizer_.load_state_dict(sd)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class _Regressor(RegressorMixin, _Base):
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # (n, k) targets fit k outputs
        return tags

    def predict(self, X: Any) -> Any:
        """Predicted values, ``(n,)`` (or ``(n, k)`` for 2-D targets)."""
        X = self._predict_raw(X)
        out = self.model_.forward(X).astype(np.float64)
        return out if self._y_2d else out[:, 0]


class _Classifier(ClassifierMixin, _Base):
    _output = "classification"

    def _targets(self, y: Any, fitting: bool) -> tuple[Any, int, str]:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if fitting and not hasattr(self, "classes_"):
            self.classes_ = np.unique(y)
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"the target has {k} class; a classifier needs at least 2")
        idx = np.searchsorted(self.classes_, y)
        if np.any(idx >= k) or np.any(self.classes_[np.minimum(idx, k - 1)] != y):
            raise ValueError(f"y has labels not in classes_ {self.classes_.tolist()}")
        if k == 2:
            return idx.astype(np.dtype(self.dtype)).reshape(-1, 1), 1, "binary"
        return idx.astype(np.int64), k, "multiclass"

    def fit(self, X: Any, y: Any) -> _Classifier:
        """Fit from scratch for up to ``max_iter`` epochs."""
        self.__dict__.pop("classes_", None)
        return super().fit(X, y)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, ``(n, n_classes)``, columns in ``classes_`` order."""
        X = self._predict_raw(X)
        return self.model_.predict_proba(X).astype(np.float64)

    def predict(self, X: Any) -> Any:
        """Predicted class labels."""
        X = self._predict_raw(X)
        return self.classes_[self.model_.predict(X)]


class _MLPParams:
    """The parameters of the MLP estimators (scikit-learn's MLP names, plus ``dtype``)."""

    def __init__(self, hidden_layer_sizes: tuple[int, ...] = (100,),
                 activation: str = "relu", solver: str = "adam", alpha: float = 1e-4,
                 batch_size: int | str = "auto", learning_rate_init: float = 1e-3,
                 max_iter: int = 200, shuffle: bool = True, random_state: int | None = None,
                 tol: float = 1e-4, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 10,
                 momentum: float = 0.9, dtype: Any = np.float64) -> None:
        _store(self, locals())


class MLPClassifier(_MLPParams, _Classifier):
    """A multilayer-perceptron classifier (scikit-learn's MLPClassifier interface).

    Args:
        hidden_layer_sizes: hidden layer sizes.
        activation: any of :data:`fastgd.models.ACTIVATIONS`.
        solver: ``"adam"``, ``"sgd"`` (Nesterov momentum) or a fastgd optimizer's name.
        alpha: L2 penalty on the weights, divided by the batch size as scikit-learn does.
        batch_size: ``"auto"`` (``min(200, n)``) or an integer.
        learning_rate_init: the optimizer's learning rate.
        max_iter: epochs.
        shuffle: reshuffle every epoch.
        random_state: seed of initialization, shuffling and the validation split.
        tol: improvement that resets the patience counter.
        early_stopping: hold out ``validation_fraction`` and stop on its loss.
        validation_fraction: the held-out share.
        n_iter_no_change: patience, in epochs.
        momentum: SGD momentum.
        dtype: float64 (default, as scikit-learn) or float32 (faster).
    """



class MLPRegressor(_MLPParams, _Regressor):
    """A multilayer-perceptron regressor (scikit-learn's MLPRegressor interface).

    Args are those of :class:`MLPClassifier`; the loss is the mean squared error.
    """



class LogisticRegression(_Classifier):
    """Logistic regression fitted by gradient descent (binary or multinomial).

    Args:
        alpha: L2 penalty.
        solver: ``"adam"``, ``"sgd"`` or a fastgd optimizer's name.
        learning_rate_init: learning rate.
        max_iter: epochs.
        batch_size: ``"auto"`` or an integer.
        random_state: seed.
        tol: early-stopping tolerance on the training loss.
        n_iter_no_change: patience.
        dtype: float64 or float32.
    """

    def __init__(self, alpha: float = 1e-4, solver: str = "adam",
                 learning_rate_init: float = 1e-2, max_iter: int = 100,
                 batch_size: int | str = "auto", shuffle: bool = True,
                 random_state: int | None = None, tol: float = 1e-4,
                 n_iter_no_change: int = 10, dtype: Any = np.float64) -> None:
        _store(self, locals())


class LinearRegression(_Regressor):
    """Least-squares linear regression fitted by gradient descent.

    Args are those of :class:`LogisticRegression`.
    """

    def __init__(self, alpha: float = 0.0, solver: str = "adam",
                 learning_rate_init: float = 1e-2, max_iter: int = 200,
                 batch_size: int | str = "auto", shuffle: bool = True,
                 random_state: int | None = None, tol: float = 1e-6,
                 n_iter_no_change: int = 10, dtype: Any = np.float64) -> None:
        _store(self, locals())
