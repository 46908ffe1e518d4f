"""scikit-learn estimators on fastgd's kernels: swap the import, keep the code.

``MLPClassifier`` and ``MLPRegressor`` are scikit-learn 1.9's (every parameter, attribute
and behaviour, the same initialization and random draws, so ``solver="sgd"`` and
``"adam"`` fit the same model as scikit-learn's, to rounding), with the network's
forward, backward and update as fastgd kernels and ``solver="lbfgs"`` as fastgd.LBFGS.
``LogisticRegression`` minimizes scikit-learn's objective to the same optimum by
full-batch L-BFGS; ``LinearRegression`` is the least-squares solution. Sparse ``X``
(CSR) is multiplied by CSR kernels, never densified. This module needs scikit-learn
(``pip install scikit-learn``); scikit-learn's own ``test_mlp.py`` runs against it in
fastgd's test suite.

Example:
    >>> import numpy as np
    >>> from fastgd.sklearn import MLPClassifier    # was: from sklearn.neural_network
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)); y = np.where(X[:, 0] > 0, "a", "b")
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100,
    ...                     random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
"""

from fastgd._sklearn_linear import LinearRegression, LogisticRegression
from fastgd._sklearn_mlp import MLPClassifier, MLPRegressor

__all__ = ["LinearRegression", "LogisticRegression", "MLPClassifier", "MLPRegressor"]
