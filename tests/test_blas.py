"""kernels/cpu/blas.py: NumPy's BLAS from compiled code, with np.matmul's exact bits."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from fastgd.kernels.cpu import blas
from numba import njit

from fastgd._threads import blas_threads


def _numpy_has_openblas64() -> bool:
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return (info.get("name") == "scipy-openblas"
            and "USE64BITINT" in info.get("openblas configuration", ""))


def _addresses():
    """NumPy's routines (skipping where NumPy's BLAS is not one blas.py can call)."""
    found = blas.addresses()
    if found is None:
        assert not _numpy_has_openblas64()  # NumPy's own wheels bundle one: it must be found
        pytest.skip("NumPy's BLAS is not a scipy-openblas64 library")
    return found


@functools.cache
def _compiled():
    @njit(cache=False)
    def run(addresses, plan, a, b, out):
        blas.matmul(addresses, plan, a, b, out)

    def call(addresses, a, b, out):
        # the compiled side reads the C-contiguous arrays under the views (A for A.T)
        run(addresses, blas.plan(a, b, out), _base(a), _base(b), out)

    return call


def _base(view):
    return view if view.flags.c_contiguous else view.T


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _layouts(A, B):
    """(a, b) C- and F-contiguous, as the MLP's products pass them (A.T, W.T)."""
    yield A, B
    yield np.asfortranarray(A), B
    yield A, np.asfortranarray(B)


SIZES = (0, 1, 2, 6, 7, 13, 64, 100, 200)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_has_numpys_bits_for_every_shape_and_layout(dtype):
    # scipy's BLAS (Numba's np.dot) differed from NumPy's matmul in the last bits here, e.g.
    # float64 64 x 100 @ 100 x 200, float32 (7, 6) @ (6,): this must hold for all of them
    at = _addresses()[np.dtype(dtype)]
    call = _compiled()
    rng = np.random.default_rng(5)
    checked = 0
    for m, n, p in itertools.product(SIZES, repeat=3):
        A = rng.standard_normal((m, n)).astype(dtype)
        W = rng.standard_normal((n, p)).astype(dtype)
        A[A < -1] = -0.0  # signed zeros: NumPy's loop adds products to 0
        for a, b in _layouts(A, W):
            want = np.matmul(a, b)
            out = np.full((m, p), np.nan, dtype)
            call(at, a, b, out)
            assert np.array_equal(_bits(out), _bits(want)), (m, n, p, a.flags.f_contiguous,
                                                             b.flags.f_contiguous)
            checked += 1
    assert checked == 3 * len(SIZES) ** 3


def test_matmul_obeys_blas_thread_limits_as_numpy():
    # NumPy's library, NumPy's thread pool: same bits on one thread and on every core
    at = _addresses()[np.dtype(np.float64)]
    call = _compiled()
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((300, 257)), rng.standard_normal((257, 301))
    for threads in (1, 2, None):
        with blas_threads(threads):
            want = np.matmul(a, b)
            out = np.empty_like(want)
            call(at, a, b, out)
        assert np.array_equal(_bits(out), _bits(want))


def test_plan_refuses_what_numpy_would_compute_otherwise():
    # the two cases where np.matmul would not call these routines on these arrays
    a = np.arange(12.0).reshape(3, 4)
    out = np.full((3, 3), 7.0)
    strided = np.arange(24.0).reshape(3, 8)[:, ::2]  # NumPy copies it first
    fortran = np.asfortranarray(out)
    operands = [a.copy(), strided.copy(), fortran.copy()]
    with pytest.raises(ValueError, match="syrk"):  # a @ a.T: NumPy takes syrk
        blas.plan(a, a.T, out)
    with pytest.raises(ValueError, match="copies"):
        blas.plan(strided, np.ones((4, 3)), out)
    with pytest.raises(ValueError, match="copies"):  # an F-ordered result: NumPy swaps
        blas.plan(a, np.ones((4, 3)), fortran)
    assert np.all(out == 7.0)  # nothing written
    for before, now in zip(operands, [a, strided, fortran]):
        assert np.array_equal(before, now)


def test_addresses_name_numpys_routines_per_dtype():
    found = _addresses()
    assert set(found) == {np.dtype(np.float32), np.dtype(np.float64)}
    for routines in found.values():
        assert len(routines) == len(blas.ROUTINES) and all(isinstance(x, int) and x
                                                            for x in routines)
    assert len({x for r in found.values() for x in r}) == 6  # six distinct entry points

