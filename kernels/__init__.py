"""fastgd's compute layer: the only place with array loops.

``kernels.cpu`` holds Numba kernels for NumPy arrays. Each rule lives in a module of its
own (``kernels/cpu/adam.py``, ...), and every kernel follows one contract: 1-D contiguous
arrays of equal length, updated in place in one pass; arguments are the read-only gradient,
then the scalars, then the arrays it writes (the parameter, then the state).
"""
