"""MLPClassifier / MLPRegressor: scikit-learn's API and algorithm on fastgd's kernels.

The network is a :class:`fastgd.models.MLP` (fused bias + activation and loss kernels,
BLAS matmuls, CSR kernels for sparse input) whose parameters live in one FlatParams;
``coefs_`` and ``intercepts_`` are views of that buffer, so setting their values sets the
model. ``solver="sgd"`` / ``"adam"`` step with fastgd.SGD / fastgd.Adam (one kernel per
step over the whole network), ``"lbfgs"`` with fastgd.LBFGS over the same buffer, and any
other fastgd optimizer is accepted by name. What scikit-learn's estimator does around
them is reproduced: its initialization (the same random draws), mini-batches and
shuffling (the same ``random_state`` calls), the penalty ``alpha / batch size``, the
learning-rate schedules (applied at the end of each epoch), the stopping rule (``tol``,
``n_iter_no_change``), the stratified early-stopping split, ``warm_start``,
``partial_fit``'s rules and its warnings and errors.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

import fastgd
from fastgd import _backend
from fastgd._sklearn_linear import _sample_weight
from fastgd._threads import blas_threads, kernel_threads
from fastgd.models import MLP
from fastgd.models.activations import ACTIVATIONS
from fastgd.models.mlp import _CSR, _is_sparse
from fastgd.optim import by_name

__all__ = ["MLPClassifier", "MLPRegressor"]

#: scikit-learn's activation names -> fastgd's (fastgd's other activations are extras)
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh",
                "relu": "relu", **{a: a for a in ACTIVATIONS}}
_STOCHASTIC = ("sgd", "adam")
_LEARNING_RATES = ("constant", "invscaling", "adaptive")
#: scipy's L-BFGS-B stops when the loss changes by less than factr * eps (factr 1e7)
_LBFGS_FTOL = 1e7 * np.finfo(float).eps


def _interval(name: str, value: Any, lo: float, hi: float | None = None, *,
              lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a number in the interval."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and not math.isnan(value):
        ok = (value > lo if lo_open else value >= lo) and (
            hi is None or (value < hi if hi_open else value <= hi))
    else:
        ok = False
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open or hi is None else "]"
        what = "an int" if integer else "a float"
        raise ValueError(f"The '{name}' parameter must be {what} in the range "
                         f"{left}{lo}, {'inf' if hi is None else hi}{right}. Got {value!r} "
                         "instead.")


class _Solver:
    """The stochastic solver's state: a fastgd optimizer and scikit-learn's schedule.

    ``learning_rate`` is scikit-learn's attribute of the same name (for Adam the
    bias-corrected step size of the last step, as scikit-learn reports it).
    """

    def __init__(self, est: Any, flat: Any) -> None:
        self.solver = est.solver
        self.lr_schedule = est.learning_rate
        self.learning_rate_init = float(est.learning_rate_init)
        self.power_t = float(est.power_t)
        self.lr = self.learning_rate_init
        if est.solver == "sgd":
            self.optimizer: Any = fastgd.SGD(
                flat, lr=self.lr, momentum=float(est.momentum),
                nesterov=bool(est.nesterovs_momentum) and est.momentum > 0)
        elif est.solver == "adam":
            # scikit-learn adds epsilon to sqrt(v) before the bias correction: eps_mode="hat"
            self.optimizer = fastgd.Adam(flat, lr=self.lr, betas=(est.beta_1, est.beta_2),
                                         eps=est.epsilon, eps_mode="hat")
        else:
            self.optimizer = by_name(est.solver)(flat, lr=self.lr)

    @property
    def learning_rate(self) -> float:
        if self.solver == "adam":
            b1, b2 = self.optimizer.param_groups[0]["betas"]
            t = self.optimizer.steps_applied
            if t:
                return self.lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        return self.lr

    def _set_lr(self, lr: float) -> None:
        """A new learning rate; SGD's momentum buffer keeps scikit-learn's velocity.

        scikit-learn's velocity is ``v = momentum v - lr g``; torch's buffer form steps
        ``lr (momentum buf + g)``: equal while lr is constant, and kept equal across a
        change of lr by scaling the buffer by ``old / new``.
        """
        old, self.lr = self.lr, lr
        opt = self.optimizer
        opt.param_groups[0]["lr"] = lr
        if self.solver == "sgd" and lr != old and lr > 0:
            for st in opt.state.values():
                buf = st.get("momentum_buffer")
                if buf is not None:
                    buf *= old / lr

    def iteration_ends(self, time_step: int) -> None:
        if self.solver == "sgd" and self.lr_schedule == "invscaling":
            self._set_lr(self.learning_rate_init / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg: str, verbose: Any) -> bool:
        if self.solver != "sgd" or self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.lr <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_lr(self.lr / 5.0)
        if verbose:
            print(msg + f" Setting learning rate to {self.lr:f}")
        return False


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (scikit-learn's BaseMultilayerPerceptron)."""

    def __init__(self, hidden_layer_sizes: Any = (100,), activation: str = "relu", *,
                 solver: str = "adam", alpha: float = 0.0001, batch_size: Any = "auto",
                 learning_rate: str = "constant", learning_rate_init: float = 0.001,
                 power_t: float = 0.5, max_iter: int = 200, shuffle: bool = True,
                 random_state: Any = None, tol: float = 1e-4, verbose: Any = False,
                 warm_start: bool = False, momentum: float = 0.9,
                 nesterovs_momentum: bool = True, early_stopping: bool = False,
                 validation_fraction: float = 0.1, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8, n_iter_no_change: Any = 10,
                 max_fun: int = 15000, n_jobs: int | None = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_jobs = n_jobs

    # -- parameters --------------------------------------------------------------------------

    def _check_params(self) -> list[int]:
        """Every constructor parameter checked (before any data is read); the layer sizes."""
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"The 'activation' parameter must be one of "
                             f"{sorted(_ACTIVATIONS)}. Got {self.activation!r} instead.")
        if self.solver not in ("lbfgs", *_STOCHASTIC):
            try:
                by_name(self.solver)
            except ValueError as e:
                raise ValueError(f"unknown solver {self.solver!r}; use 'lbfgs', 'sgd', "
                                 f"'adam' or {e}") from None
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(f"The 'learning_rate' parameter must be one of "
                             f"{list(_LEARNING_RATES)}. Got {self.learning_rate!r} instead.")
        _interval("alpha", self.alpha, 0)
        _interval("learning_rate_init", self.learning_rate_init, 0, lo_open=True)
        _interval("power_t", self.power_t, 0)
        _interval("max_iter", self.max_iter, 1, integer=True)
        _interval("tol", self.tol, 0)
        _interval("momentum", self.momentum, 0, 1)
        _interval("validation_fraction", self.validation_fraction, 0, 1, hi_open=True)
        _interval("beta_1", self.beta_1, 0, 1, hi_open=True)
        _interval("beta_2", self.beta_2, 0, 1, hi_open=True)
        _interval("epsilon", self.epsilon, 0, lo_open=True)
        _interval("max_fun", self.max_fun, 1, integer=True)
        if self.n_iter_no_change != np.inf:
            _interval("n_iter_no_change", self.n_iter_no_change, 1, integer=True)
        if self.batch_size != "auto":
            _interval("batch_size", self.batch_size, 1, integer=True)
        if self.n_jobs is not None and (not isinstance(self.n_jobs, numbers.Integral)
                                        or isinstance(self.n_jobs, bool) or self.n_jobs == 0):
            raise ValueError("The 'n_jobs' parameter must be None or an int other than 0. Got "
                             f"{self.n_jobs!r} instead.")
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"The '{name}' parameter must be a bool. Got "
                                 f"{getattr(self, name)!r} instead.")
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                   for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be integers, got {self.hidden_layer_sizes}")
        if np.any(np.array(sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    # -- the network --------------------------------------------------------------------------

    def _output_kind(self) -> tuple[str, str]:
        """(fastgd MLP output, its loss) for ``out_activation_``."""
        if self.out_activation_ == "softmax":
            return "multiclass", "softmax_xent"
        if self.out_activation_ == "logistic":
            return ("binary" if self.n_outputs_ == 1 else "multilabel"), "bce"
        if self.out_activation_ == "exp":
            return "regression", "poisson"
        return "regression", "squared_error"

    def _initialize(self, y: Any, layer_units: list[int], dtype: Any) -> None:
        """Fresh weights and counters: scikit-learn's initialization, the same draws."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        factor = 2.0 if self.activation == "logistic" else 6.0
        coefs, intercepts = [], []
        for fan_in, fan_out in itertools.pairwise(layer_units):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coefs.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)))
            intercepts.append(self._random_state.uniform(-bound, bound, fan_out))
        self.coefs_ = [c.astype(dtype, copy=False) for c in coefs]
        self.intercepts_ = [b.astype(dtype, copy=False) for b in intercepts]
        self._model = None
        self._sync_model()
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _sync_model(self) -> Any:
        """The fastgd MLP holding ``coefs_`` / ``intercepts_`` (rebuilt if they were replaced).

        ``coefs_[i]`` and ``intercepts_[i]`` are views of the model's parameter buffer;
        arrays assigned in their place (as scikit-learn's own tests do) are copied into a
        model of their shapes and replaced by its views.
        """
        model = getattr(self, "_model", None)
        coefs, intercepts = list(self.coefs_), list(self.intercepts_)
        if model is not None and len(coefs) == model.n_layers and all(
                a is model.params[2 * i] and b is model.params[2 * i + 1]
                for i, (a, b) in enumerate(zip(coefs, intercepts))):
            return model
        coefs = [np.asarray(c) for c in coefs]
        intercepts = [np.asarray(b).reshape(-1) for b in intercepts]
        dtype = np.result_type(*coefs, *intercepts)
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(np.float64)
        sizes = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
        output, loss = self._output_kind()
        model = MLP(sizes, activation=_ACTIVATIONS[self.activation], output=output, loss=loss,
                    init="zeros", dtype=dtype, seed=0)
        for i, (c, b) in enumerate(zip(coefs, intercepts)):
            model.params[2 * i][...] = c
            model.params[2 * i + 1][...] = b
        self._model = model
        self.coefs_ = list(model.params[0::2])
        self.intercepts_ = list(model.params[1::2])
        return model

    def _targets(self, y: Any) -> Any:
        """Binarized / 2-D targets as the model's loss takes them."""
        output, _ = self._output_kind()
        if output == "multiclass":
            return np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.int64)
        return np.ascontiguousarray(y, dtype=self._model.dtype)

    def _loss_and_grad(self, X: Any, y: Any, sample_weight: Any) -> float:
        """scikit-learn's loss on a batch (its alpha term included); gradients written.

        ``X``, ``y`` and ``sample_weight`` are prepared by the model's checks already
        (rows of arrays that passed them), so the kernels run without checking again.
        """
        model = self._model
        total = X.shape[0] if sample_weight is None else float(sample_weight.sum())
        model.l2 = float(self.alpha) / total if total > 0 else 0.0
        loss = float(model._loss_and_grad(X, y, sample_weight))
        if model.loss_name == "squared_error" and self.n_outputs_ > 1:
            # scikit-learn reports the squared error averaged over outputs (its gradient
            # is that of the sum): the data term is divided by the number of outputs
            penalty = float(model._penalty())
            loss = (loss - penalty) / self.n_outputs_ + penalty
        return loss

    def _loss_grad_lbfgs(self, packed_coef_inter: Any, X: Any, y: Any, sample_weight: Any,
                         *workspace: Any) -> tuple[float, Any]:
        """scikit-learn's private loss-and-gradient of the packed parameters.

        ``packed_coef_inter`` is scikit-learn's packing (every ``coefs_`` raveled, then
        every ``intercepts_``); the gradient comes back in the same packing. The
        workspace arguments of scikit-learn's signature are accepted and unused.
        """
        del workspace
        model = self._sync_model()
        theta = np.asarray(packed_coef_inter)
        at = 0
        for part in (model.params[0::2], model.params[1::2]):
            for p in part:
                p[...] = theta[at : at + p.size].reshape(p.shape)
                at += p.size
        yt = np.asarray(y)
        Xm, yt = model._prepare(X, self._targets(yt.reshape(len(yt), -1)))
        loss = self._loss_and_grad(Xm, yt, model._check_weights(sample_weight, Xm.shape[0]))
        grads = model.grads
        return loss, np.concatenate([g.ravel() for g in (*grads[0::2], *grads[1::2])])

    # -- fitting --------------------------------------------------------------------------

    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False
             ) -> _BaseMLP:
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        sample_weight = _sample_weight(sample_weight, n_samples)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features, *hidden, self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype)
        model = self._sync_model()
        if model.layer_sizes != layer_units:
            raise ValueError(f"the network has layer sizes {model.layer_sizes}, the data and "
                             f"hidden_layer_sizes ask for {layer_units}")
        if X.dtype != model.dtype:
            X = X.astype(model.dtype)
        from joblib import effective_n_jobs  # scikit-learn's dependency: n_jobs as it means it

        n_jobs = effective_n_jobs(self.n_jobs)
        csr = model._csr_pays(X, n_jobs)  # a mostly-zero dense X: the CSR first layer
        with (_fit_threads(n_jobs, csr or _is_sparse(X)),
              np.errstate(over="ignore", invalid="ignore")):
            if self.solver == "lbfgs":
                self._fit_lbfgs(X, y, sample_weight, csr, n_jobs)
            else:
                self._fit_stochastic(X, y, sample_weight, incremental, csr, n_jobs)
        if not all(np.isfinite(w).all() for w in (*self.coefs_, *self.intercepts_)):
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

    def _fit_lbfgs(self, X: Any, y: Any, sample_weight: Any, csr: bool, n_jobs: int) -> None:
        model = self._model
        Xm, yt = model._prepare(X, self._targets(y))
        Xm = _first_layer_input(Xm, csr, n_jobs)
        sample_weight = model._check_weights(sample_weight, Xm.shape[0])
        opt = fastgd.LBFGS(model.flat, lr=1.0, max_iter=self.max_iter, max_eval=self.max_fun,
                           tolerance_grad=self.tol, tolerance_change=_LBFGS_FTOL,
                           history_size=10, line_search_fn="strong_wolfe", blas_threads=None)
        opt.step(lambda: self._loss_and_grad(Xm, yt, sample_weight))
        st = opt.state[0] if opt.state else {"n_iter": 0, "func_evals": 1}
        self.n_iter_ = min(int(st["n_iter"]), self.max_iter)
        self.loss_ = float(self._loss_and_grad(Xm, yt, sample_weight))
        if int(st["n_iter"]) >= self.max_iter or int(st["func_evals"]) >= self.max_fun:
            reason = ("TOTAL NO. OF ITERATIONS REACHED LIMIT" if st["n_iter"] >= self.max_iter
                      else "TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT")
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status=1):\nSTOP: {reason}\n\nIncrease the number of iterations "
                          "to improve the convergence (max_iter="
                          f"{self.max_iter}).\nYou might also want to scale the data as shown "
                          "in:\n    https://scikit-learn.org/stable/modules/"
                          "preprocessing.html", ConvergenceWarning, stacklevel=3)

    def _fit_stochastic(self, X: Any, y: Any, sample_weight: Any, incremental: bool,
                        csr: bool, n_jobs: int) -> None:
        model = self._model
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = _Solver(self, model.flat)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X, y, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
                sw_train = sw_val = None
            else:
                X_train, X_val, y_train, y_val, sw_train, sw_val = train_test_split(
                    X, y, sample_weight, random_state=self._random_state,
                    test_size=self.validation_fraction, stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        else:
            X_train, y_train, sw_train = X, y, sample_weight
            X_val = y_val = sw_val = None
        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped", stacklevel=3)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        Xm, yt = model._prepare(X_train, self._targets(y_train))
        Xm = _first_layer_input(Xm, csr, n_jobs)
        sw_train = model._check_weights(sw_train, Xm.shape[0])
        step = self._optimizer.optimizer.step
        rows = _Rows(Xm, batch_size)
        batches = list(_batches(n_samples, batch_size))  # the same slices every epoch
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = _shuffled(sample_idx, self._random_state)
                accumulated = 0.0
                for k, batch in enumerate(batches):
                    idx = sample_idx[batch] if self.shuffle else batch
                    ahead = (sample_idx[batches[k + 1]] if self.shuffle and k + 1 < len(batches)
                             else _backend.NO_ROWS)
                    sw = None if sw_train is None else sw_train[idx]
                    loss = self._loss_and_grad(rows(idx, ahead), yt[idx], sw)
                    accumulated += loss * (batch.stop - batch.start)
                    step()
                self.n_iter_ += 1
                self.loss_ = accumulated / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                self._optimizer.iteration_ends(self.t_)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = ("Validation score" if early_stopping else "Training loss")
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self._optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  "reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning, stacklevel=3)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        if early_stopping:  # the best weights, into the model's buffer
            for view, best in zip((*self.coefs_, *self.intercepts_),
                                  (*self._best_coefs, *self._best_intercepts)):
                view[...] = best

    def _update_no_improvement_count(self, early_stopping: bool, X: Any, y: Any,
                                     sample_weight: Any) -> None:
        if early_stopping:
            score = self._score(X, y, sample_weight)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [b.copy() for b in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _BaseMLP:
        """Fit the model to ``X`` and ``y`` (``max_iter`` epochs or L-BFGS iterations).

        Args:
            X: ``(n_samples, n_features)``, dense or a SciPy sparse matrix.
            y: class labels (classifier; a 2-D indicator matrix for multilabel) or
                targets (regressor, ``(n,)`` or ``(n, n_outputs)``).
            sample_weight: ``(n_samples,)`` weights.

        Returns:
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self) -> bool:
        if self.solver in ("lbfgs", "LBFGS"):
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    # -- predicting --------------------------------------------------------------------------

    def _forward_pass_fast(self, X: Any, check_input: bool = True) -> Any:
        """The network's output after the output activation (scikit-learn's name)."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False,
                              dtype=(np.float64, np.float32))
        model = self._sync_model()
        z = model.forward(X)
        act = self.out_activation_
        if act == "softmax":
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
        elif act == "logistic":
            with np.errstate(over="ignore"):
                z = 1.0 / (1.0 + np.exp(-z))
        elif act == "exp":
            with np.errstate(over="ignore"):
                np.exp(z, out=z)
        return z

    def _score_with_function(self, X: Any, y: Any, sample_weight: Any, fn: Any) -> float:
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(fn(y, y_pred, sample_weight=sample_weight))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: object's may be __dict__ itself
        if state.get("_model") is not None:  # views of the model's buffer: rebuilt on load
            state.pop("coefs_", None)
            state.pop("intercepts_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        model = getattr(self, "_model", None)
        if model is not None and "coefs_" not in state:
            self.coefs_ = list(model.params[0::2])
            self.intercepts_ = list(model.params[1::2])

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class _Rows:
    """Mini-batches of the prepared training input: ``rows(idx)`` is rows ``idx`` of ``X``.

    A CSR input gives views of its arrays (:meth:`_CSR.take`); a dense one is gathered by
    fastgd's row kernel into one buffer, reused by every batch (NumPy's fancy indexing
    allocates a new array each time: 41 against 32 us for 200 rows of 100 floats from a
    122 MB array here, 4.7 against 3.0 us on the digits).
    """

    def __init__(self, X: Any, batch_size: int) -> None:
        self.X = X
        self.buf = None if isinstance(X, _CSR) else np.empty((batch_size, X.shape[1]), X.dtype)

    def __call__(self, idx: Any, ahead: Any = _backend.NO_ROWS) -> Any:
        """Rows ``idx``; a dense input's ``ahead`` (the next batch's) are prefetched."""
        if self.buf is None:
            return self.X.take(idx)
        if isinstance(idx, slice):  # consecutive rows (no shuffling): a view
            return self.X[idx]
        out = self.buf[: idx.size]
        _backend.launch("gather", "gather_rows", (), self.X, idx, ahead, out)
        return out


def _first_layer_input(Xm: Any, csr: bool, n_jobs: int) -> Any:
    """The prepared ``X`` as the first layer multiplies it.

    ``csr``: a mostly-zero dense ``X`` goes to the CSR kernels. On one thread a CSR input
    (that one, or a sparse ``X``) holds its dense columns as a dense array for BLAS
    (:meth:`~fastgd.models.mlp._CSR.with_dense_columns`; MNIST's central pixels). With
    more, the CSR kernels have the threads and BLAS one (:func:`_fit_threads`), so all
    entries stay with them.
    """
    if csr:
        return _CSR.from_dense(Xm, dense_columns=n_jobs == 1)
    if n_jobs == 1 and isinstance(Xm, _CSR):
        return Xm.with_dense_columns()
    return Xm


@contextlib.contextmanager
def _fit_threads(n_jobs: int, sparse_first: bool) -> Iterator[None]:
    """A fit's threads go to whichever does its first layer's products, never to both.

    ``n_jobs`` 1: BLAS on one thread, fastgd's kernels serial. More: BLAS's GEMMs take
    them for a dense input (fastgd's kernels stay serial), the CSR kernels for a sparse or
    mostly-zero one (BLAS on one thread). Both pools at once stall each other: OpenBLAS's
    threads spin after each call and Numba's wait for the cores (a 200k x 100 fit took
    20.8 s that way here, 0.74 s with BLAS alone on two threads).
    """
    blas, kernels = (n_jobs, 1) if n_jobs > 1 and not sparse_first else (1, n_jobs)
    with blas_threads(blas), kernel_threads(kernels):
        yield


def _known_labels(binarizer: Any, y: Any, every: bool) -> Any:
    """``binarizer.transform(y).astype(bool)`` where ``y`` is a 1-D array of its classes.

    A later fit's labels (``partial_fit``, ``warm_start``): scikit-learn's checks and
    ``transform`` classify the labels anew each call (~1 ms of a 200-row ``partial_fit``,
    twice its step). None where ``y`` is anything else, or has a label the binarizer has
    not seen, or (``every``) lacks one of its classes: scikit-learn's path then decides
    (and raises its errors).
    """
    classes = binarizer.classes_
    if (binarizer.y_type_ not in ("binary", "multiclass") or binarizer.sparse_output
            or type(y) is not np.ndarray or y.ndim != 1 or classes.size < 2):
        return None
    kinds = y.dtype.kind + classes.dtype.kind
    if not (set(kinds) <= set("biu") or kinds in ("UU", "SS")):  # comparable labels only
        return None
    at = np.searchsorted(classes, y).clip(0, classes.size - 1)
    if not (classes[at] == y).all():
        return None
    if every and np.bincount(at, minlength=classes.size).min() == 0:
        return None
    if classes.size == 2:  # one column: the second class
        return (at == 1)[:, None]
    out = np.zeros((y.size, classes.size), bool)
    out[np.arange(y.size), at] = True
    return out


def _accuracy(y: Any, y_pred: Any, sample_weight: Any = None) -> float:
    """``accuracy_score(y, y_pred, sample_weight=...)`` on labels the fit already checked.

    The validation score of early stopping, once per epoch: scikit-learn's function checks
    and classifies its inputs first (1.9 ms a call on the digits' 144 validation rows, a
    third of a digits epoch). A row counts when all its labels match (multilabel).
    """
    right = y == y_pred
    if right.ndim > 1:
        right = right.all(axis=1)
    return float(np.average(right, weights=sample_weight))


def _batches(n: int, size: int) -> Iterator[slice]:
    """``sklearn.utils.gen_batches(n, size)``'s slices, without its parameter checks.

    Those took 24 us a call here, 3 us per mini-batch of the digits (one call an epoch).
    """
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _shuffled(sample_idx: Any, random_state: Any) -> Any:
    """``sklearn.utils.shuffle(sample_idx, random_state=random_state)``: the same draw.

    scikit-learn shuffles ``arange(n)`` with the RandomState and indexes by it; this does
    the same without its input checks (the digits' 1437 indices: 24 against 209 us here,
    once per epoch).
    """
    order = np.arange(sample_idx.size)
    random_state.shuffle(order)
    return sample_idx[order]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    r"""Multi-layer perceptron classifier: scikit-learn's MLPClassifier, on fastgd's kernels.

    Every parameter of scikit-learn 1.9's ``MLPClassifier``, with its default and meaning
    (see scikit-learn's documentation), fits the same model by the same algorithm:

    .. math:: \min_\theta\ \frac1{\sum w}\sum_i w_i\,\ell(y_i, f_\theta(x_i))
       + \frac{\alpha}{2\sum w}\|W\|^2

    with softmax (multiclass) or logistic (binary, multilabel) outputs and the log loss,
    by ``"adam"`` (fastgd.Adam, scikit-learn's epsilon placement), ``"sgd"`` (fastgd.SGD;
    scikit-learn's momentum, Nesterov and learning-rate schedules) or ``"lbfgs"``
    (fastgd.LBFGS with a strong-Wolfe line search; scikit-learn uses SciPy's L-BFGS-B, so
    the iterates differ while the optimum is the same). ``solver`` also takes any fastgd
    optimizer's name, ``activation`` fastgd's other activations, and ``n_jobs`` the
    threads of ``fit`` (None: one, robust on a busy machine; -1: every core, given to BLAS
    for a dense ``X`` or to the CSR kernels of a sparse or mostly-zero one), as extras.
    ``X`` of float32 trains in float32.

    Attributes are scikit-learn's: ``classes_``, ``loss_``, ``best_loss_``,
    ``loss_curve_``, ``validation_scores_``, ``best_validation_score_``, ``t_``,
    ``coefs_`` / ``intercepts_`` (views of the network's parameter buffer), ``n_iter_``,
    ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``n_features_in_``,
    ``feature_names_in_``.

    Example:
        >>> import numpy as np
        >>> from fastgd.sklearn import MLPClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 4)); y = np.where(X[:, 0] > 0, "a", "b")
        >>> clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01,
        ...                     max_iter=100, random_state=0).fit(X, y)
        >>> clf.score(X, y) > 0.9
        True
    """

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[Any, Any]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        first = (not hasattr(self, "classes_")) or (not self.warm_start and not incremental)
        if first:
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        known = _known_labels(self._label_binarizer, y, every=self.warm_start and not first)
        if known is not None:
            return X, known
        if not first:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously "
                                     f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
                    ) -> MLPClassifier:
        """One epoch over ``(X, y)`` from the current state (stochastic solvers only).

        Args:
            X: ``(n_samples, n_features)``.
            y: labels.
            sample_weight: ``(n_samples,)`` weights.
            classes: every class of the whole data; required on the first call.

        Returns:
            The estimator.
        """
        if _first_partial_fit_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: Any) -> Any:
        """Predicted class labels (an indicator matrix for multilabel)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X: Any, check_input: bool = True) -> Any:
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        return self._score_with_function(X, y, sample_weight, _accuracy)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities ``(n_samples, n_classes)`` in ``classes_`` order."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X: Any) -> Any:
        """``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's MLPRegressor, on fastgd's kernels.

    As :class:`MLPClassifier`, with the identity output and ``loss="squared_error"``
    (half the mean squared error) or ``"poisson"`` (an exponential output and the Poisson
    deviance); multi-output targets ``(n, k)`` fit ``k`` outputs.

    Example:
        >>> import numpy as np
        >>> from fastgd.sklearn import MLPRegressor
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3)); y = X @ [1.0, -2.0, 0.5]
        >>> reg = MLPRegressor(hidden_layer_sizes=(16,), solver="lbfgs",
        ...                    random_state=0).fit(X, y)
        >>> reg.score(X, y) > 0.99
        True
    """

    def __init__(self, loss: str = "squared_error", hidden_layer_sizes: Any = (100,),
                 activation: str = "relu", *, solver: str = "adam", alpha: float = 0.0001,
                 batch_size: Any = "auto", learning_rate: str = "constant",
                 learning_rate_init: float = 0.001, power_t: float = 0.5,
                 max_iter: int = 200, shuffle: bool = True, random_state: Any = None,
                 tol: float = 1e-4, verbose: Any = False, warm_start: bool = False,
                 momentum: float = 0.9, nesterovs_momentum: bool = True,
                 early_stopping: bool = False, validation_fraction: float = 0.1,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 n_iter_no_change: Any = 10, max_fun: int = 15000,
                 n_jobs: int | None = None) -> None:
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, n_jobs=n_jobs)
        self.loss = loss

    def _check_params(self) -> list[int]:
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"The 'loss' parameter must be one of ['poisson', "
                             f"'squared_error']. Got {self.loss!r} instead.")
        return super()._check_params()

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[Any, Any]:
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (np.asarray(y) < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression.")
        return X, y

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over ``(X, y)`` from the current state (stochastic solvers only)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: Any) -> Any:
        """Predicted targets ``(n_samples,)`` or ``(n_samples, n_outputs)``."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X: Any, check_input: bool = True) -> Any:
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred[:, 0]
        return y_pred

    def _score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        return self._score_with_function(X, y, sample_weight, r2_score)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _first_partial_fit_call(est: Any, classes: Any) -> bool:
    """scikit-learn's first-call rule of partial_fit: classes are required once, fixed after."""
    if getattr(est, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(est, "classes_", None) is not None:
            if not np.array_equal(est.classes_, unique_labels(classes)):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                 f"partial_fit, was: {est.classes_!r}")
        else:
            est.classes_ = unique_labels(classes)
            return True
    return False
