r"""Weight initializers, seeded through a NumPy ``Generator``.

``fan_in``/``fan_out`` are a weight matrix's input and output sizes.

============== =====================================================
zeros          0
normal         :math:`\mathcal N(0, 0.01^2)`
uniform        :math:`U(-0.05, 0.05)`
xavier_normal  :math:`\mathcal N(0, 2/(f_{in}+f_{out}))` (Glorot)
xavier_uniform :math:`U(\pm\sqrt{6/(f_{in}+f_{out})})`
he_normal      :math:`\mathcal N(0, 2/f_{in})` (Kaiming)
he_uniform     :math:`U(\pm\sqrt{6/f_{in}})`
============== =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["INITIALIZERS", "initialize"]


def _zeros(rng, shape, fan_in, fan_out):
    return np.zeros(shape)


def _normal(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, 0.01, shape)


def _uniform(rng, shape, fan_in, fan_out):
    return rng.uniform(-0.05, 0.05, shape)


def _xavier_normal(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)


def _xavier_uniform(rng, shape, fan_in, fan_out):
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, shape)


def _he_normal(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)


def _he_uniform(rng, shape, fan_in, fan_out):
    a = math.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, shape)


INITIALIZERS: dict[str, Callable[..., np.ndarray]] = {
    "zeros": _zeros, "normal": _normal, "uniform": _uniform,
    "xavier_normal": _xavier_normal, "xavier_uniform": _xavier_uniform,
    "he_normal": _he_normal, "he_uniform": _he_uniform,
}


def initialize(name: str, shape: tuple[int, ...], fan_in: int, fan_out: int,
               rng: np.random.Generator) -> np.ndarray:
    """Initial values (float64) for a weight of ``shape``.

    Example:
        >>> w = initialize("he_uniform", (100, 10), 100, 10, np.random.default_rng(0))
        >>> bool(abs(w).max() <= (6 / 100) ** 0.5)
        True
    """
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; choose from "
                         f"{', '.join(INITIALIZERS)}")
    return INITIALIZERS[name](rng, shape, max(fan_in, 1), max(fan_out, 1))
