"""The kernels that sum as they write: their results do not depend on where arrays lie.

A loop that both stores to one array and sums over another gets, from LLVM's vectorizer, a
run-time check that the two do not overlap: a vector loop where they lie far enough apart,
a scalar one where they might overlap. Under the ``reassoc`` flag the two add in different
orders, so a sum would change in its last bits with the arrays' placement (two small
arrays allocated side by side, or views of one buffer). These kernels store and sum in
separate loops; here each runs on the same values laid out far apart, side by side with
gaps of 0 to 9 elements, and overlapping nothing, and must give the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastgd import _backend


def _placements(arrays, rng):
    """The same values: separate arrays, then side by side in one buffer with gaps, in
    the order given and reversed."""
    yield [a.copy() for a in arrays]
    for gap in range(10):
        for order in (range(len(arrays)), range(len(arrays) - 1, -1, -1)):
            size = sum(a.size + gap for a in arrays)
            buf = np.empty(size, arrays[0].dtype)
            buf[...] = rng.standard_normal(size)  # whatever lay there before
            out, at = [None] * len(arrays), 0
            for k in order:
                a = arrays[k]
                out[k] = buf[at:at + a.size].reshape(a.shape)
                out[k][...] = a
                at += a.size + gap
            yield out


def _same_everywhere(run, arrays, rng):
    results = [run(*placed) for placed in _placements(arrays, rng)]
    for r in results[1:]:
        for x, y in zip(results[0], r):
            np.testing.assert_array_equal(x, y)
    return results[0]


@pytest.mark.parametrize("pairs", [0, 1, 2, 4])
@pytest.mark.parametrize("n", [3, 7, 12, 16, 21, 40, 1000])
def test_the_two_loop_recursion(n, pairs, rng):
    # d <- -H g over the history's rows: d next to g, to the history's rows, to nothing
    Y = rng.standard_normal((pairs + 1, n))
    S = rng.standard_normal((pairs + 1, n))
    ro = 1.0 / np.einsum("ij,ij->i", Y, S)[:pairs]
    order = np.arange(pairs, dtype=np.int64)

    def run(g, d, y, s):
        parts = np.empty(1)
        _backend.launch("axpy", "two_loop", (), y, s, order, ro, 0.7, parts, g, d)
        return [d]

    g = rng.standard_normal(n)
    d = _same_everywhere(run, [g, np.zeros(n), Y, S], rng)[0]
    q = g.copy()  # the textbook recursion, in NumPy
    al = np.zeros(pairs)
    for j in range(pairs - 1, -1, -1):
        al[j] = ro[j] * (S[j] @ q)
        q -= al[j] * Y[j]
    r = 0.7 * q
    for j in range(pairs):
        r += S[j] * (al[j] - ro[j] * (Y[j] @ r))
    np.testing.assert_allclose(d, -r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [5, 12, 16, 21, 40, 333])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_weights_l2_gradient_and_penalty(n, dtype, rng):
    w0 = rng.standard_normal(n).astype(dtype)
    g0 = rng.standard_normal(n).astype(dtype)

    def run(w, g):
        out = np.zeros(1)
        _backend.launch("nn", "l2_grad", (), w, 0.01, g, out)
        return [g, out]

    g, out = _same_everywhere(run, [w0, g0], rng)
    np.testing.assert_array_equal(g, g0 + dtype(0.01) * w0)
    w64 = w0.astype(np.float64)
    np.testing.assert_allclose(out[0], w64 @ w64, rtol=1e-14)


@pytest.mark.parametrize("softmax", [True, False])
def test_the_linear_models_one_pass(softmax, rng):
    # many outputs, so that a row's loop over them would vectorize; the scratch rows
    # beside the targets (multilabel 0 / 1 targets: a float array)
    rows, d, k = 6, 5, 24
    X = rng.standard_normal((rows, d))
    wt = rng.standard_normal((k, d))
    b = rng.standard_normal(k)
    labels = rng.integers(0, k, rows).astype(np.int64)
    targets = (rng.random((rows, k)) < 0.5).astype(np.float64)

    def run(zbuf, gbuf, *placed):
        target = labels if softmax else placed[0]
        gt, gb = np.empty((1, k, d)), np.empty((1, k))
        correct, loss = np.empty(1), np.empty(1)
        _backend.launch_sized(rows * d * k, "nn", "linear_xent", (("softmax", softmax),), X,
                              wt, b, target, np.empty(0), 1.0 / rows, zbuf, gbuf, gt, gb,
                              correct, loss)
        return [gt, gb, correct, loss]

    arrays = [np.zeros((1, 2, k)), np.zeros((1, k, d)), *([] if softmax else [targets])]
    gt, gb, correct, loss = _same_everywhere(run, arrays, rng)
    z = X @ wt.T + b
    if softmax:
        zs = z - z.max(axis=1, keepdims=True)
        want = np.sum(np.log(np.exp(zs).sum(axis=1)) - zs[np.arange(rows), labels])
    else:
        want = np.sum(np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z))))
    np.testing.assert_allclose(loss[0], want, rtol=1e-12)
    if softmax:
        p = np.exp(zs) / np.exp(zs).sum(axis=1, keepdims=True)
        dz = (p - np.eye(k)[labels]) / rows
        hits = np.sum(z.argmax(axis=1) == labels)
    else:
        dz = (1 / (1 + np.exp(-z)) - targets) / rows
        hits = np.sum((z > 0) == (targets == 1))
    np.testing.assert_allclose(gt[0], dz.T @ X, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(gb[0], dz.sum(axis=0), rtol=1e-10, atol=1e-15)
    assert correct[0] == hits
