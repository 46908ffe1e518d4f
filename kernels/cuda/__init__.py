"""CuPy kernels for CUDA arrays (this package imports cupy, never numba).

Each module is the twin of the same-named module in ``kernels/cpu``: the same function
names, argument order, variable names and statement order, so the two read side by side.
Every update rule is a CuPy ``ElementwiseKernel`` (type placeholder ``T`` for float32 /
float64), built once per variant and memoized; CuPy compiles it on its first launch and
caches the binary on disk. fastgd imports this package only on first sight of a CuPy array.
"""
