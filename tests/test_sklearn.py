"""scikit-learn estimators: scikit-learn's own estimator checks, pipelines, search, accuracy."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
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


@parametrize_with_checks([LogisticRegression(random_state=0), LinearRegression(random_state=0),
                          MLPClassifier(random_state=0), MLPRegressor(random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def test_mlp_classifier_matches_sklearn_accuracy():
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = _digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    ours, theirs = [], []
    for seed in range(4):  # one seed varies by +-2 %; compare the mean over four
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=30, random_state=seed)
        ours.append(clf.fit(Xtr, ytr).score(Xte, yte))
        sk = SkMLP(hidden_layer_sizes=(64,), max_iter=30, random_state=seed)
        with pytest.warns(Warning):  # sklearn: "did not converge" after 30 epochs
            theirs.append(sk.fit(Xtr, ytr).score(Xte, yte))
    assert np.mean(ours) >= np.mean(theirs) - 0.015
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.n_features_in_ == 64


def test_pipeline_grid_search_and_clone():
    X, y = _digits()
    pipe = make_pipeline(StandardScaler(),
                         LogisticRegression(max_iter=30, batch_size=32, random_state=0))
    search = GridSearchCV(pipe, {"logisticregression__alpha": [1e-4, 1e-2]}, cv=2)
    search.fit(X[:600], y[:600])
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.model_selection import cross_val_score

    reference = cross_val_score(make_pipeline(StandardScaler(), SkLogistic(max_iter=1000)),
                                X[:600], y[:600], cv=2).mean()
    assert search.best_score_ >= reference - 0.03
    c = clone(search.best_estimator_)
    assert c.get_params()["logisticregression__alpha"] in (1e-4, 1e-2)


def test_partial_fit_and_pickle_continue_training():
    X, y = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0, solver="sgd",
                        learning_rate_init=0.05)
    clf.partial_fit(X[:500], y[:500], classes=np.arange(10))
    clone_after = pickle.loads(pickle.dumps(clf))
    clf.partial_fit(X[:500], y[:500])
    clone_after.partial_fit(X[:500], y[:500])
    np.testing.assert_array_equal(clf.predict_proba(X[:50]), clone_after.predict_proba(X[:50]))
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X[:10], y[:10])


def test_regressors_fit_a_linear_function():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X @ np.array([2.0, -1.0, 0.5]) + 1.0
    lin = LinearRegression(max_iter=300, random_state=0).fit(X, y)
    assert lin.score(X, y) > 0.999
    mlp = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(X, y)
    assert mlp.score(X, y) > 0.98
    two = LinearRegression(max_iter=300, random_state=0).fit(X, np.c_[y, -y])
    assert two.predict(X).shape == (400, 2)


def test_unknown_solver_is_refused():
    clf = MLPClassifier(solver="bogus")
    with pytest.raises(ValueError, match="unknown solver 'bogus'; use 'adam', 'sgd' or"):
        clf.fit(np.ones((4, 2)), np.array([0, 1, 0, 1]))
    assert not hasattr(clf, "model_")
    assert clf.set_params(solver="nadam").fit(np.ones((4, 2)), [0, 1, 0, 1]).n_iter_ > 0


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(("est", "X", "y", "match"), [
    (MLPRegressor(alpha=float("nan"), max_iter=3), None, None, "Invalid alpha value: nan"),
    (MLPClassifier(early_stopping=True, validation_fraction=1.5, max_iter=3), None, None,
     r"validation_fraction must be in \(0, 1\), got 1.5"),
    (MLPRegressor(learning_rate_init=-1.0), None, None, "Invalid learning rate"),
    (MLPRegressor(max_iter=3), "nan", None, "Input X contains NaN"),
    (MLPRegressor(max_iter=3), None, "inf", "Input y contains infinity"),
    (MLPRegressor(max_iter=3, dtype=np.float32), "1e39", None,
     r"X contains NaN or infinity \(after conversion to float32\)"),
])
def test_bad_input_is_a_clear_error(est, X, y, match):
    rng = np.random.default_rng(0)
    Xd, yd = rng.normal(size=(40, 3)), rng.normal(size=40)
    if X == "nan":
        Xd[3, 1] = np.nan
    if X == "1e39":
        Xd[0, 0] = 1e39
    if y == "inf":
        yd[2] = np.inf
    with pytest.raises(ValueError, match=match):
        est.fit(Xd, yd)
    assert not hasattr(est, "model_") or est.n_iter_ == 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_diverging_fit_is_an_error():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * 1e150
    y = X @ np.ones(3)
    with pytest.raises(ValueError, match="training diverged"):
        MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=1.0,
                     max_iter=5).fit(X, y)
