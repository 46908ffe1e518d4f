"""fastgd: gradient-descent parameter updates as fast as the hardware allows.

Every update rule is one compiled, fused, in-place kernel (Numba for NumPy arrays),
dispatched by array type behind one torch.optim-style API. Importing fastgd compiles
nothing; each kernel compiles on first use and is cached on disk.
"""

from fastgd import clip, functional, models, schedules
from fastgd._backend import serial_kernels
from fastgd.accumulate import GradientAccumulator
from fastgd.averaging import EMA, SWA, WeightAverage
from fastgd.checkpoint import CheckpointError, load, save
from fastgd.clip import NonFiniteGradientError, clip_grad_norm_, clip_grad_value_
from fastgd.flat import FlatGroup, FlatParams
from fastgd.optim import Optimizer
from fastgd.optim.registry import RULES as _RULES
from fastgd.sparse import SparseGrad
from fastgd.train import EarlyStopping, History, fit

# The optimizer classes, one per registry entry: fastgd.Adam, fastgd.SGD, ...
globals().update({_rule.name: _rule.cls for _rule in _RULES.values()})

__version__ = "0.1.0"

__all__ = [
    "EMA",
    "SWA",
    "CheckpointError",
    "EarlyStopping",
    "FlatGroup",
    "FlatParams",
    "GradientAccumulator",
    "History",
    "NonFiniteGradientError",
    "Optimizer",
    "SparseGrad",
    "WeightAverage",
    "__version__",
    "clip",
    "clip_grad_norm_",
    "clip_grad_value_",
    "fit",
    "functional",
    "load",
    "models",
    "save",
    "schedules",
    "serial_kernels",
    *sorted(_RULES),
]
