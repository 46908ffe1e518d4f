"""Numba kernels for NumPy arrays (this package imports numba, never cupy).

Nothing is compiled at import: :func:`kernels.cpu._jit.rule` builds a kernel variant on
first use and Numba caches the machine code on disk (``cache=True``), so a later process
loads it instead of compiling again.
"""
