"""Integer codes shared by the CPU kernels and their CUDA twins.

This module imports neither numba nor cupy, so both backends read the same table.
"""

#: Activation name -> the ``act`` variant flag of the ``bias_act`` and ``act_grad`` kernels.
ACT_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4,
             "softplus": 5, "gelu": 6}

#: Rows whose weight gradient the one-pass linear kernel (``nn.linear_xent``) sums in the
#: array's dtype before adding it into its float64 partial sums (float32 sums over a whole
#: data set would lose digits; a float64 sum per row would halve the vector width); also
#: the fewest rows of one of its chunks.
LINEAR_BLOCK = 256
