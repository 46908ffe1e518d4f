"""Hyperparameter checks shared by the optimizer classes and the functional layer.

Messages start with torch.optim's wording ("Invalid learning rate: ...") and name the
argument, so an error reads the same whichever library a user comes from. The checkers
that the rules' hyperparameter tables use (``Optimizer.hyperparameters``) take
``(name, value)`` and return the checked value. This module imports nothing of fastgd.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any


def real(name: str, value: Any) -> float:
    """``value`` as a finite Python float, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be finite)")
    return v


def lr(value: Any, name: str = "lr") -> float:
    """A learning rate: finite and >= 0 (torch: "Invalid learning rate")."""
    if callable(value) and not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = real(name, value)
    if v < 0.0:
        raise ValueError(f"Invalid learning rate: {value!r} ({name} must be >= 0)")
    return v


def nonneg(name: str, value: Any, label: str | None = None) -> float:
    """A finite value >= 0 (torch: "Invalid <label> value")."""
    v = real(name, value)
    if v < 0.0:
        raise ValueError(f"Invalid {label or name} value: {value!r} ({name} must be >= 0)")
    return v


def closed_unit(name: str, value: Any) -> float:
    """A finite value in [0, 1] (torch: "Invalid rho value")."""
    v = real(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be in [0, 1])")
    return v


def betas(name: str, value: Any) -> tuple[float, float]:
    """A pair of coefficients, each in [0, 1) (torch: "Invalid beta parameter at index i")."""
    try:
        pair = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a pair of numbers, got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
    out = []
    for i, b in enumerate(pair):
        v = real(f"{name}[{i}]", b)
        if not 0.0 <= v < 1.0:
            raise ValueError(
                f"Invalid beta parameter at index {i}: {b!r} ({name}[{i}] must be in [0, 1))"
            )
        out.append(v)
    return out[0], out[1]


def epsilon(name: str, value: Any) -> float:
    """An epsilon: finite and >= 0 (torch: "Invalid epsilon value")."""
    return nonneg(name, value, "epsilon")


def learning_rate(name: str, value: Any) -> float:
    """:func:`lr` with the checker signature ``(name, value)`` of the rule tables."""
    return lr(value, name)


def one_of(*options: str) -> Callable[[str, Any], str]:
    """A checker ``(name, value)`` for one of a fixed set of strings."""

    def check(name: str, value: Any) -> str:
        return choice(name, value, options)

    return check


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got "
                         f"{value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """A bool option."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def step(value: Any, name: str = "step") -> float:
    """A 1-based step number: the count of steps taken including this one."""
    v = real(name, value)
    if v < 1.0 or v != int(v):
        raise ValueError(f"Invalid {name} value: {value!r} ({name} must be an integer >= 1)")
    return v


def nonneg_int(name: str, value: Any) -> int:
    """An integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value
