"""Integer codes shared by the CPU kernels and their CUDA twins.

This module imports neither numba nor cupy, so both backends read the same table.
"""

#: Activation name -> the ``act`` variant flag of the ``bias_act`` and ``act_grad`` kernels.
ACT_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4,
             "softplus": 5, "gelu": 6}
