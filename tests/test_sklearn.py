"""scikit-learn estimators: its estimator checks, the same fitted models as its own, errors.

scikit-learn's own test files run against these estimators in tests/test_sklearn_suites.py.
"""

from __future__ import annotations

import itertools
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import linear_model as sk_linear  # noqa: E402
from sklearn import neural_network as sk_nn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastgd.sklearn import (  # noqa: E402
    LinearRegression,
    LogisticRegression,
    MLPClassifier,
    MLPRegressor,
)


@parametrize_with_checks([LogisticRegression(), LinearRegression(),
                          MLPClassifier(random_state=0, max_iter=50),
                          MLPRegressor(random_state=0, max_iter=50)])
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _digits(n_class=10):
    from sklearn.datasets import load_digits

    X, y = load_digits(n_class=n_class, return_X_y=True)
    return X / 16.0, y


def _params(m):
    return [*m.coefs_, *m.intercepts_]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kw", [
    {"solver": "sgd"},
    {"solver": "sgd", "nesterovs_momentum": False, "momentum": 0.5},
    {"solver": "sgd", "learning_rate": "invscaling", "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "adaptive", "tol": 0.5, "n_iter_no_change": 2},
    {"solver": "adam"},
    {"solver": "adam", "early_stopping": True, "validation_fraction": 0.2},
    {"solver": "adam", "activation": "logistic", "batch_size": 64, "shuffle": False},
    {"solver": "sgd", "activation": "tanh", "alpha": 0.1, "momentum": 0.0},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mlp_classifier_fits_scikit_learns_model(kw, dtype):
    X, y = _digits()
    X = X.astype(dtype)
    args = {"hidden_layer_sizes": (24,), "max_iter": 12, "random_state": 0, **kw}
    theirs = sk_nn.MLPClassifier(**args).fit(X, y)
    ours = MLPClassifier(**args).fit(X, y)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    for a, b in zip(_params(ours), _params(theirs)):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=tol)
    assert (ours.n_iter_, ours.t_) == (theirs.n_iter_, theirs.t_)
    assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate,
                                                         rel=1e-6)
    if kw.get("early_stopping"):
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_loss_ is None
    else:
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=tol)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-3,
                               atol=tol)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_mostly_zero_input_fits_the_same_model_on_the_csr_kernels(solver, dtype, monkeypatch):
    """Digits with all but the darkest pixels zeroed (density 0.16; MNIST: 0.19) take the CSR
    first layer; the fit is scikit-learn's (adam, sgd) and the dense path's."""
    from fastgd import _backend
    from fastgd.models import mlp

    X, y = _digits()
    X = np.where(X > 0.85, X, 0.0).astype(dtype)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert np.count_nonzero(X) <= min(mlp.SPARSE_DENSITY.values()) * X.size
    args = {"hidden_layer_sizes": (24,), "max_iter": 12, "random_state": 0, "solver": solver}
    csr_calls = []
    real = _backend.launch_sized

    def recording(size, module, name, *args, **kwargs):
        csr_calls.append(name)
        return real(size, module, name, *args, **kwargs)

    monkeypatch.setattr(_backend, "launch_sized", recording)
    ours = MLPClassifier(**args).fit(X, y)
    assert {"csr_matmul", "csr_tmatmul"} <= set(csr_calls)
    monkeypatch.setattr(mlp, "SPARSE_DENSITY", {1: 0.0, 2: 0.0})  # the dense path
    csr_calls.clear()
    dense = MLPClassifier(**args).fit(X, y)
    assert not csr_calls
    assert ours.n_iter_ == dense.n_iter_
    for a, b in zip(_params(ours), _params(dense)):
        assert a.dtype == b.dtype == dtype
    if solver == "lbfgs" and dtype == np.float32:
        # float32 L-BFGS amplifies the products' different rounding: by iteration 12 the
        # weights of some seeds (this one) differ by ~1e-4 relative, the objective by ~1e-5
        assert ours.loss_ == pytest.approx(dense.loss_, rel=1e-4)
        return
    for a, b in zip(_params(ours), _params(dense)):
        np.testing.assert_allclose(a, b, rtol=10 * tol, atol=tol / 100)
    if solver != "lbfgs":  # scikit-learn's lbfgs is SciPy's: other iterates
        theirs = sk_nn.MLPClassifier(**args).fit(X, y)
        for a, b in zip(_params(ours), _params(theirs)):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=tol)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_each_batch_gather_prefetches_the_next_batch_rows(monkeypatch):
    from fastgd import _backend

    X, y = _digits()
    seen = []
    real = _backend.launch

    def recording(module, name, flags, *args):
        if name == "gather_rows":
            seen.append((args[1].copy(), np.asarray(args[2]).copy()))
        return real(module, name, flags, *args)

    monkeypatch.setattr(_backend, "launch", recording)
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, batch_size=500, random_state=0).fit(X, y)
    assert len(seen) == 8  # 1797 rows: 4 batches an epoch
    for epoch in (seen[:4], seen[4:]):
        for (_, ahead), (rows, _) in itertools.pairwise(epoch):
            np.testing.assert_array_equal(ahead, rows)
        assert epoch[-1][1].size == 0  # the next epoch's order is drawn after this one
    seen.clear()
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, batch_size=500, shuffle=False,
                  random_state=0).fit(X, y)
    assert not seen  # unshuffled batches are views of X


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sparse", [False, True], ids=["mostly-zero", "scipy"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_dense_columns_of_a_sparse_input_go_to_blas_on_one_thread(solver, sparse, monkeypatch):
    """A CSR first layer (a mostly-zero or a sparse X) with 40 columns 60 % nonzero: on one
    thread those columns are multiplied by BLAS, the other entries by the CSR kernels; with
    n_jobs=-1 the CSR kernels take every entry. The fit is scikit-learn's (adam, sgd) and
    the one without the split."""
    from fastgd.models import mlp

    rng = np.random.default_rng(3)
    n, dense_cols, features = 400, 40, 200
    density = np.r_[np.full(dense_cols, 0.6), np.full(features - dense_cols, 0.05)]
    X = rng.random((n, features)) * (rng.random((n, features)) < density)
    y = np.argmax(X @ rng.normal(size=(features, 3)), axis=1)
    assert np.count_nonzero(X) <= mlp.SPARSE_DENSITY[1] * X.size
    if sparse:
        X = pytest.importorskip("scipy.sparse").csr_matrix(X)
    splits = set()  # the dense columns of the first layer's products
    real = mlp._CSR.matmul

    def recording(self, w, out):
        splits.add(None if self.dense is None else self.dense_cols.size)
        return real(self, w, out)

    monkeypatch.setattr(mlp._CSR, "matmul", recording)
    args = {"hidden_layer_sizes": (16,), "max_iter": 10, "random_state": 0, "solver": solver}
    ours = MLPClassifier(**args).fit(X, y)
    assert splits == {dense_cols}
    splits.clear()
    from joblib import effective_n_jobs

    MLPClassifier(**args, n_jobs=-1).fit(X, y)
    assert splits == ({None} if effective_n_jobs(-1) > 1 else {dense_cols})
    splits.clear()
    monkeypatch.setattr(mlp, "DENSE_COLUMNS_MIN", features + 1)  # every entry to the CSR
    whole = MLPClassifier(**args).fit(X, y)
    assert splits == {None}
    for a, b in zip(_params(ours), _params(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    if solver != "lbfgs":  # scikit-learn's lbfgs is SciPy's: other iterates
        theirs = sk_nn.MLPClassifier(**args).fit(X, y)
        for a, b in zip(_params(ours), _params(theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("zeros", [False, True], ids=["dense", "mostly-zero"])
def test_n_jobs_gives_the_threads_to_the_first_layer_and_fits_the_same_model(
        solver, zeros, monkeypatch):
    """n_jobs=None (the default, like 1): BLAS on one thread, fastgd's kernels serial.
    n_jobs=-1: every thread to the first layer's products, BLAS's for a dense input (fastgd's
    kernels serial), the CSR kernels' for a mostly-zero one (BLAS on one thread). The
    fitted model is the same (to the bit on fastgd's kernels)."""
    import numba
    from threadpoolctl import threadpool_info

    from fastgd import _backend

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    X, y = _digits()
    if zeros:
        X = np.where(X > 0.85, X, 0.0)
    from joblib import effective_n_jobs

    threads, cores, outside = numba.get_num_threads(), effective_n_jobs(-1), blas_threads()
    seen = []
    real = _backend.launch

    def recording(*args, **kwargs):
        if len(seen) < 2:
            seen.append((_backend._mode.size, numba.get_num_threads(), blas_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(_backend, "launch", recording)
    args = {"hidden_layer_sizes": (24,), "max_iter": 8, "random_state": 0, "solver": solver}
    serial = MLPClassifier(**args).fit(X, y)
    assert seen and all(mode == _backend._SERIAL and blas == {1} for mode, _, blas in seen)
    seen.clear()
    threaded = MLPClassifier(**args, n_jobs=-1).fit(X, y)
    assert seen
    for mode, n, blas in seen:
        if zeros:
            assert (mode, n, blas) == (None, min(cores, numba.config.NUMBA_NUM_THREADS), {1})
        else:
            assert mode == _backend._SERIAL and blas == {cores}
    assert numba.get_num_threads() == threads and _backend._mode.size is None
    assert blas_threads() == outside
    for a, b in zip(_params(serial), _params(threaded)):
        if zeros:  # fastgd's kernels give the same bits on any thread count
            np.testing.assert_array_equal(a, b)
        else:  # BLAS on several threads may add in another order
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if solver != "lbfgs" and zeros:
        assert serial.loss_curve_ == threaded.loss_curve_


def test_shuffle_draws_scikit_learns_permutation():
    from sklearn.utils import shuffle

    from fastgd._sklearn_mlp import _shuffled

    idx = np.arange(97) * 3
    a, b = np.random.RandomState(4), np.random.RandomState(4)
    for _ in range(3):
        np.testing.assert_array_equal(_shuffled(idx, a), shuffle(idx, random_state=b))


def test_validation_accuracy_is_scikit_learns_accuracy_score():
    from sklearn.metrics import accuracy_score

    from fastgd._sklearn_mlp import _accuracy

    rng = np.random.default_rng(0)
    w = rng.random(50)
    for y, p in [(rng.integers(0, 4, 50), rng.integers(0, 4, 50)),
                 (rng.choice(["a", "b"], 50), rng.choice(["a", "b"], 50)),
                 (rng.integers(0, 2, (50, 3)), rng.integers(0, 2, (50, 3)))]:
        for sw in (None, w):
            assert _accuracy(y, p, sw) == accuracy_score(y, p, sample_weight=sw)
        assert 0 < _accuracy(y, p) < 1


def test_known_labels_are_the_label_binarizers_transform():
    from sklearn.preprocessing import LabelBinarizer

    from fastgd._sklearn_mlp import _known_labels

    rng = np.random.default_rng(0)
    for labels in (np.array([3, 5, 9]), np.array(["cat", "dog"]), np.array([0, 1, 2, 3])):
        lb = LabelBinarizer().fit(labels)
        y = rng.choice(labels, 40)
        np.testing.assert_array_equal(_known_labels(lb, y, every=False),
                                      lb.transform(y).astype(bool))
        assert _known_labels(lb, y[y != labels[0]], every=True) is None  # a class missing
        assert _known_labels(lb, y[y != labels[0]], every=False) is not None
    lb = LabelBinarizer().fit(np.array([3, 5, 9]))
    for other in (np.array([3, 4]), np.array(["3", "5"]), np.array([3.0, 5.5]),
                  np.array([[3, 5]]), [3, 5]):  # unseen, other kinds, 2-D, not an array
        assert _known_labels(lb, other, every=False) is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_partial_fit_with_known_labels_fits_as_scikit_learns_checks_would(monkeypatch):
    from fastgd import _sklearn_mlp

    X, y = _digits()
    models = []
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(_sklearn_mlp, "_known_labels", lambda *a, **k: None)
        clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
        clf.partial_fit(X[:200], y[:200], classes=np.arange(10))
        for i in range(200, 1000, 200):
            clf.partial_fit(X[i : i + 200], y[i : i + 200])
        models.append(clf)
    for a, b in zip(_params(models[0]), _params(models[1])):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()  # an unseen label: the direct encoding hands over to the checks
    before = [p.copy() for p in _params(models[0])]
    t = models[0].t_
    with pytest.raises(ValueError, match=r"`y` has classes not in `self\.classes_`"):
        models[0].partial_fit(X[:5], np.array([0, 1, 2, 3, 11]))
    for a, b in zip(_params(models[0]), before):
        np.testing.assert_array_equal(a, b)
    assert models[0].t_ == t


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fit_encodes_its_labels_as_the_label_binarizer_would(monkeypatch):
    # a first fit one-hot encodes the labels it has just seen directly (_known_labels):
    # the same model as LabelBinarizer.transform's encoding, binary and multiclass
    from fastgd import _sklearn_mlp

    X, y = _digits()
    X, y = X[:400], y[:400]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven",
                      "eight", "nine"])
    calls = []
    real = _sklearn_mlp._known_labels
    for labels in (y, y > 4, names[y]):
        models = []
        for fast in (True, False):
            monkeypatch.setattr(_sklearn_mlp, "_known_labels", (
                lambda *a, **k: calls.append(1) or real(*a, **k)) if fast
                else (lambda *a, **k: None))
            clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
            models.append(clf.fit(X, labels))
        np.testing.assert_array_equal(models[0].classes_, models[1].classes_)
        for a, b in zip(_params(models[0]), _params(models[1])):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(models[0].predict(X), models[1].predict(X))
    assert len(calls) == 3  # the direct encoding served each first fit


def test_batches_are_scikit_learns():
    from sklearn.utils import gen_batches

    from fastgd._sklearn_mlp import _batches

    for n, size in [(1437, 200), (1400, 200), (5, 200), (1, 1), (10, 3), (200, 200)]:
        assert list(_batches(n, size)) == list(gen_batches(n, size))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_mlp_regressor_fits_scikit_learns_model(loss):
    X, _ = _digits()
    y = np.abs(X[:, 10:13] * 3)  # three non-negative outputs
    w = np.random.default_rng(0).uniform(0.2, 2.0, len(X))
    args = {"loss": loss, "hidden_layer_sizes": (16,), "solver": "adam", "max_iter": 8,
            "random_state": 0}
    theirs = sk_nn.MLPRegressor(**args).fit(X, y, sample_weight=w)
    ours = MLPRegressor(**args).fit(X, y, sample_weight=w)
    for a, b in zip(_params(ours), _params(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)
    assert ours.out_activation_ == theirs.out_activation_
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)


def test_partial_fit_multilabel_and_warm_start_match_scikit_learn():
    from sklearn.datasets import make_multilabel_classification

    X, Y = make_multilabel_classification(n_samples=60, random_state=0)
    ours = MLPClassifier(solver="sgd", hidden_layer_sizes=(8,), random_state=0)
    theirs = sk_nn.MLPClassifier(solver="sgd", hidden_layer_sizes=(8,), random_state=0)
    for _ in range(5):
        ours.partial_fit(X, Y, classes=np.arange(5))
        theirs.partial_fit(X, Y, classes=np.arange(5))
    for a, b in zip(_params(ours), _params(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    X, y = _digits(3)
    args = {"hidden_layer_sizes": (8,), "max_iter": 3, "warm_start": True, "random_state": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPClassifier(**args), sk_nn.MLPClassifier(**args)
        for _ in range(2):
            ours.fit(X, y)
            theirs.fit(X, y)
    for a, b in zip(_params(ours), _params(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "logistic"])
def test_lbfgs_reaches_scikit_learns_loss(activation):
    X, y = _digits()
    args = {"solver": "lbfgs", "hidden_layer_sizes": (20,), "max_iter": 200,
            "activation": activation, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = sk_nn.MLPClassifier(**args).fit(X, y)
        ours = MLPClassifier(**args).fit(X, y)
    # the same objective from the same start; the solvers' paths differ (SciPy's L-BFGS-B
    # vs fastgd.LBFGS): both fit the training set and reach losses of the same order
    assert ours.score(X, y) >= theirs.score(X, y) - 0.01
    assert ours.loss_ <= 3 * theirs.loss_ + 1e-3
    assert 1 <= ours.n_iter_ <= 200


def test_sparse_input_equals_dense():
    sp = pytest.importorskip("scipy.sparse")
    X, y = _digits()
    args = {"hidden_layer_sizes": (8,), "max_iter": 3, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = MLPClassifier(**args).fit(X, y)
        sparse = MLPClassifier(**args).fit(sp.csr_matrix(X), y)
    for a, b in zip(_params(dense), _params(sparse)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dense.predict_proba(X), sparse.predict_proba(sp.csr_matrix(X)),
                               rtol=1e-10)


def test_coefs_are_views_of_the_model():
    X, y = _digits(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, y)
    before = clf.predict_proba(X[:3])
    clf.coefs_[1][...] = 0.0  # the output layer's weights: only the intercepts remain
    after = clf.predict_proba(X[:3])
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, np.tile(after[0], (3, 1)))
    clf.intercepts_[1] = np.array([5.0, 0.0, 0.0])  # a new array: the model follows it
    assert (clf.predict(X[:3]) == clf.classes_[0]).all()


def test_pickle_continues_training_identically(tmp_path):
    X, y = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, solver="sgd",
                        learning_rate_init=0.05)
    clf.partial_fit(X[:500], y[:500], classes=np.arange(10))
    clone_after = pickle.loads(pickle.dumps(clf))
    clf.partial_fit(X[:500], y[:500])
    clone_after.partial_fit(X[:500], y[:500])
    np.testing.assert_array_equal(clf.predict_proba(X[:50]), clone_after.predict_proba(X[:50]))
    assert clone_after.coefs_[0] is clone_after._model.params[0]


def test_pipeline_grid_search_and_clone():
    X, y = _digits()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    search = GridSearchCV(pipe, {"logisticregression__C": [0.01, 1.0]}, cv=2)
    search.fit(X[:600], y[:600])
    reference = GridSearchCV(make_pipeline(StandardScaler(), sk_linear.LogisticRegression(
        max_iter=200)), {"logisticregression__C": [0.01, 1.0]}, cv=2).fit(X[:600], y[:600])
    assert search.best_score_ == pytest.approx(reference.best_score_, abs=0.01)
    c = clone(search.best_estimator_)
    assert c.get_params()["logisticregression__C"] in (0.01, 1.0)


def _objective(clf, X, y, C, w=None):
    P = clf.predict_proba(X)
    nll = -np.log(P[np.arange(len(y)), np.searchsorted(clf.classes_, y)])
    return C * (nll if w is None else w * nll).sum() + 0.5 * (clf.coef_**2).sum()


@pytest.mark.parametrize("n_class", [2, 3, 10])
@pytest.mark.parametrize("kw", [{}, {"C": 0.05}, {"fit_intercept": False},
                                {"class_weight": "balanced"}, {"weights": True},
                                {"C": 1e3, "max_iter": 500}],
                         ids=["default", "C=0.05", "no-intercept", "balanced", "weights",
                              "C=1e3"])
def test_logistic_regression_reaches_scikit_learns_optimum(n_class, kw):
    X, y = _digits(n_class)
    X = StandardScaler().fit_transform(X)
    kw = dict(kw)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y)) if kw.pop("weights", 0) else None
    kw.setdefault("max_iter", 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = sk_linear.LogisticRegression(**kw, tol=1e-8).fit(X, y, sample_weight=w)
        ours = LogisticRegression(**kw, tol=1e-8).fit(X, y, sample_weight=w)
    assert ours.coef_.shape == theirs.coef_.shape
    assert ours.intercept_.shape == theirs.intercept_.shape
    C = kw.get("C", 1.0)
    ww = w
    if kw.get("class_weight") == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        cw = compute_class_weight("balanced", classes=ours.classes_, y=y)
        ww = cw[np.searchsorted(ours.classes_, y)]
    f_ours, f_theirs = _objective(ours, X, y, C, ww), _objective(theirs, X, y, C, ww)
    assert f_ours == pytest.approx(f_theirs, rel=1e-4)
    assert (ours.predict(X) == theirs.predict(X)).mean() > 0.99
    if not kw.get("fit_intercept", True):
        assert (ours.intercept_ == 0).all()


def test_logistic_regression_sparse_equals_dense_and_warm_start():
    sp = pytest.importorskip("scipy.sparse")
    X, y = _digits(3)
    dense = LogisticRegression(max_iter=200).fit(X, y)
    sparse = LogisticRegression(max_iter=200).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.predict_proba(sp.csr_matrix(X)),
                               dense.predict_proba(X), rtol=1e-8)
    warm = LogisticRegression(max_iter=200, warm_start=True).fit(X, y)
    warm.fit(X, y)
    assert warm.n_iter_[0] < dense.n_iter_[0]  # it starts at the optimum


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("kw", [{}, {"fit_intercept": False}, {"positive": True}],
                         ids=["default", "no-intercept", "positive"])
def test_linear_regression_is_scikit_learns_least_squares(sparse, kw):
    sp = pytest.importorskip("scipy.sparse")
    if sparse and kw.get("positive"):
        pytest.skip("positive=True refuses sparse X (as scikit-learn's)")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)) * (rng.random((300, 6)) < 0.7)
    Y = X @ rng.normal(size=(6, 2)) + rng.normal(size=2) + 0.1 * rng.normal(size=(300, 2))
    w = rng.uniform(0.5, 2.0, 300)
    Xin = sp.csr_matrix(X) if sparse else X
    for y in (Y[:, 0], Y):
        theirs = sk_linear.LinearRegression(**kw).fit(X, y, sample_weight=w)
        ours = LinearRegression(**kw, tol=1e-12).fit(Xin, y, sample_weight=w)
        np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(ours.predict(Xin), theirs.predict(X), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_linear_regression_copy_x_false_works_in_place_with_the_same_result(weighted):
    # copy_X=False: a dense float64 X is centered (and weighted) in place, as scikit-learn
    # does, and the solution is the one copy_X=True finds on a copy
    rng = np.random.default_rng(2)
    X0 = rng.normal(size=(200, 5)) + 3.0
    y = X0 @ rng.normal(size=5) + 1.5 + 0.1 * rng.normal(size=200)
    w = rng.uniform(0.5, 2.0, 200) if weighted else None
    X = X0.copy()
    kept = LinearRegression().fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(X, X0)  # copy_X=True: X untouched
    ours = LinearRegression(copy_X=False).fit(X, y, sample_weight=w)
    theirs = sk_linear.LinearRegression(copy_X=False).fit(X0.copy(), y, sample_weight=w)
    assert np.linalg.norm(X - X0) > 1.0  # centered in place
    np.testing.assert_allclose(ours.coef_, kept.coef_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.intercept_, kept.intercept_, rtol=1e-12)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-9)
    for X32 in (X0.astype(np.float32), np.array(X0)):  # float32: a float64 copy; read-only
        X32.flags.writeable = X32.dtype == np.float32
        before = X32.copy()
        LinearRegression(copy_X=False).fit(X32, y, sample_weight=w)
        np.testing.assert_array_equal(X32, before)


def test_linear_regression_positive_refuses_sparse_x_as_scikit_learn():
    sp = pytest.importorskip("scipy.sparse")
    X, y = sp.eye(10, format="csr"), np.ones(10)
    est = LinearRegression(positive=True)
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is "
                                        "required"):
        est.fit(X, y)
    assert not hasattr(est, "coef_")


def test_linear_regression_cuts_off_singular_values_as_scikit_learn():
    # a column nearly a copy of another (1e-9 apart): under the default tol=1e-6 both treat
    # X as rank-deficient and return the same minimum-norm solution
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    X = np.column_stack([X, X[:, 0] + 1e-9 * rng.normal(size=200)])
    y = X[:, :4] @ rng.normal(size=4) + 0.01 * rng.normal(size=200)
    ours, theirs = LinearRegression().fit(X, y), sk_linear.LinearRegression().fit(X, y)
    assert ours.rank_ == theirs.rank_ == 4
    np.testing.assert_allclose(ours.singular_, theirs.singular_, rtol=1e-10)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-8, atol=1e-10)
    assert abs(ours.coef_[0] - ours.coef_[4]) < 1e-6  # the copies share the weight
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("est", "match"), [
    (MLPClassifier(alpha=-1.0), "'alpha' parameter"),
    (MLPClassifier(activation="softmax"), "'activation' parameter"),
    (MLPClassifier(solver="bogus"), "unknown solver 'bogus'"),
    (MLPRegressor(loss="huber"), "'loss' parameter"),
    (MLPClassifier(validation_fraction=1.5), "'validation_fraction' parameter"),
    (MLPClassifier(hidden_layer_sizes=(3, 0)), "hidden_layer_sizes must be > 0"),
    (MLPClassifier(n_iter_no_change=0), "'n_iter_no_change' parameter"),
    (MLPClassifier(n_jobs=0), r"'n_jobs' parameter .* Got 0 instead"),
    (MLPRegressor(n_jobs=1.5), r"'n_jobs' parameter .* Got 1.5 instead"),
    (MLPClassifier(n_jobs=True), r"'n_jobs' parameter .* Got True instead"),
    (LogisticRegression(C=-1.0), "'C' parameter"),
    (LogisticRegression(solver="saga"), "solver='saga' is not supported"),
    (LogisticRegression(l1_ratio=0.5), "l1_ratio=0.5 is not supported"),
    (LinearRegression(tol=-1.0), "'tol' parameter"),
])
def test_bad_parameters_are_clear_errors_that_fit_nothing(est, match):
    X, y = _digits(2)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    assert not any(k.endswith("_") and not k.startswith("__") for k in vars(est))


@pytest.mark.parametrize("bad", ["nan", "inf-y", "weights"])
def test_bad_data_is_a_clear_error(bad):
    X, y = _digits(2)
    X = X.copy()
    y = y.astype(float)
    w = None
    if bad == "nan":
        X[3, 1] = np.nan
    elif bad == "inf-y":
        y[2] = np.inf
    else:
        w = -np.ones(len(y))
    match = {"nan": "Input X contains NaN", "inf-y": "Input y contains infinity",
             "weights": "Negative values"}[bad]
    for est in (MLPRegressor(max_iter=3), LinearRegression()):
        with pytest.raises(ValueError, match=match):
            est.fit(X, y, sample_weight=w)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_training_that_produces_non_finite_weights_is_an_error():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * 1e150
    y = X @ np.ones(3)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=1.0,
                     max_iter=5).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "mostly-zero"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_mini_batch_fit_runs_every_kernel_serially_and_blas_on_one_thread(
        solver, sparse, monkeypatch):
    """Inside a stochastic fit no parallel Numba kernel meets another thread's work (the
    contention the README measures: BLAS's spinning threads, or a busy core, stall a
    parallel kernel), the sparse first layer's CSR kernels included; outside it the
    caller's BLAS threads and kernel mode are back."""
    from threadpoolctl import threadpool_info

    from fastgd import _backend

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    modes, seen = [], []
    real, real_sized = _backend.launch, _backend.launch_sized

    def recording(*args, **kwargs):
        modes.append(_backend._mode.size)
        if not seen:
            seen.append(blas_threads())
        return real(*args, **kwargs)

    def recording_sized(size, module, name, *args, **kwargs):
        modes.append(_backend._mode.size)
        return real_sized(size, module, name, *args, **kwargs)

    monkeypatch.setattr(_backend, "launch", recording)
    monkeypatch.setattr(_backend, "launch_sized", recording_sized)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 20)), np.arange(300) % 3
    if sparse:
        X *= rng.random(X.shape) < 0.1
    before, mode = blas_threads(), _backend._mode.size
    MLPClassifier(hidden_layer_sizes=(8,), solver=solver, max_iter=3).fit(X, y)
    assert modes and set(modes) == {_backend._SERIAL}
    assert seen == [{1}]
    assert blas_threads() == before
    assert _backend._mode.size == mode


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kw", [{"solver": "adam"}, {"solver": "lbfgs", "alpha": 0.0},
                                {"solver": "sgd", "activation": "tanh"},
                                {"solver": "adam", "n_jobs": -1}, {"binary": True},
                                {"weighted": True}])
def test_mlp_fit_runs_its_batches_compiled_with_the_python_passs_model(kw, monkeypatch):
    from fastgd.models.mlp import MLP

    X, y = _digits()
    kw = dict(kw)
    if kw.pop("binary", False):  # one output unit: NumPy's gemv in its products
        y = y % 2
    fit_args = {}
    if kw.pop("weighted", False):  # sample weights: the rows' losses and gradients scaled
        fit_args["sample_weight"] = np.random.default_rng(0).random(len(y)) * 2
    args = {"hidden_layer_sizes": (24, 12), "max_iter": 3, "random_state": 0, **kw}
    calls = []
    compiled = MLP._compiled_loss_and_grad
    monkeypatch.setattr(MLP, "_compiled_loss_and_grad",
                        lambda self, *a: calls.append(1) or compiled(self, *a))
    ours = MLPClassifier(**args).fit(X, y, **fit_args)
    assert calls  # a dense X runs the compiled pass, on one BLAS thread or every core
    monkeypatch.setattr(MLP, "_compiled_pass", lambda self, X: False)
    python = MLPClassifier(**args).fit(X, y, **fit_args)
    for a, b in zip(_params(ours), _params(python)):
        assert np.array_equal(a, b)
    assert ours.loss_ == python.loss_
    if kw.get("solver") != "lbfgs":  # scikit-learn's lbfgs keeps no loss curve
        assert ours.loss_curve_ == python.loss_curve_
