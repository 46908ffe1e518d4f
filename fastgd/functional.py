r"""Stateless, in-place update rules: the kernel boundary, for NumPy pipelines.

Each ``<rule>_`` function updates ``param`` and its state arrays in place with one fused
kernel pass, exactly as one step of the matching optimizer class (and of torch.optim) would.
The caller owns the state: create it with ``np.zeros_like(param)`` (Adagrad's sum with its
initial value) and pass the 1-based ``step`` number of the update being taken.

Arrays: ``param`` and the state arrays must be writeable, C-contiguous float32 or float64
arrays of one shape and dtype; ``grad`` must have that shape and dtype (a non-contiguous
``grad`` is copied). Any shape works, 0-d and size 0 included. Every argument is checked
before anything is written, so a call that raises changes nothing. The hyperparameters are
checked by the same table as the optimizer class's (``Optimizer.hyperparameters``).

``grad_scale`` multiplies the gradient inside the kernel (``maximize`` flips its sign), so
a clipping factor costs no extra pass over memory.

Each function lives in its rule's module (``fastgd/optim/<rule>.py``), beside the class,
and calls the same private launcher, so the two cannot drift apart; this module re-exports
every rule's function from the registry (:mod:`fastgd.optim.registry`).

Example:
    >>> import numpy as np
    >>> from fastgd import functional as F
    >>> p = np.ones(3, np.float32); g = np.full(3, 0.5, np.float32)
    >>> m, v = np.zeros_like(p), np.zeros_like(p)
    >>> F.adam_(p, g, m, v, step=1, lr=0.1)
    >>> p.round(4)
    array([0.9, 0.9, 0.9], dtype=float32)
"""

from fastgd.optim.adam import EPS_MODES
from fastgd.optim.registry import RULES

_FUNCTIONS = {r.functional.__name__: r.functional for r in RULES.values() if r.functional}
globals().update(_FUNCTIONS)

__all__ = sorted(_FUNCTIONS)
__all__ += ["EPS_MODES"]
