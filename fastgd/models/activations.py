r"""Activations with their derivatives, as fused kernels (``kernels/*/nn.py``).

The forward kernel adds the bias and applies the activation in one pass, keeping the
pre-activation :math:`z`; the backward kernel multiplies the upstream gradient in place by
:math:`f'(z)` (written from the output :math:`a` where that is cheaper, as scikit-learn
does: sigmoid :math:`a(1-a)`, tanh :math:`1-a^2`).

============  ==========================================  ======================
name          :math:`f(z)`                                :math:`f'(z)`
============  ==========================================  ======================
identity      :math:`z`                                   1
relu          :math:`\max(z, 0)`                          :math:`[z > 0]`
leaky_relu    :math:`z` if :math:`z > 0` else :math:`\alpha z`  1 or :math:`\alpha`
sigmoid       :math:`1/(1+e^{-z})`                        :math:`a(1-a)`
tanh          :math:`\tanh z`                             :math:`1 - a^2`
softplus      :math:`\log(1 + e^z)`                       :math:`\sigma(z)`
gelu          :math:`\tfrac12 z(1+\tanh(\sqrt{2/\pi}(z+0.044715z^3)))`  (tanh form)
============  ==========================================  ======================
"""

from __future__ import annotations

from typing import Any

from fastgd import _backend
from fastgd.kernels.codes import ACT_CODES

__all__ = ["ACTIVATIONS", "act_grad_", "act_grad_colsum_", "activate", "bias_act_"]

#: The activation names.
ACTIVATIONS = tuple(ACT_CODES)


def _code(name: str) -> int:
    if name not in ACT_CODES:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACT_CODES[name]


def bias_act_(b: Any, z: Any, a: Any, name: str, alpha: float = 0.01) -> None:
    """In place: ``z <- z + b`` (2-D ``z``, bias over columns), ``a <- f(z)``."""
    _backend.launch("nn", "bias_act", (("act", _code(name)),), b, float(alpha), z, a)


def act_grad_(z: Any, a: Any, d: Any, name: str, alpha: float = 0.01) -> None:
    """In place: ``d <- d * f'(z)`` (``a = f(z)``)."""
    _backend.launch("nn", "act_grad", (("act", _code(name)),), z, a, float(alpha), d)


def act_grad_colsum_(z: Any, a: Any, d: Any, out: Any, name: str, alpha: float = 0.01
                     ) -> None:
    """In place: ``d <- d * f'(z)``, then ``out <- d.sum(axis=0)`` (one pass on the CPU)."""
    _backend.launch("nn", "act_grad_colsum", (("act", _code(name)),), z, a, float(alpha), d,
                    out)


def activate(z: Any, name: str, alpha: float = 0.01) -> Any:
    """``f(z)`` for a 2-D array, as a new array (``z`` is not changed).

    Example:
        >>> import numpy as np
        >>> activate(np.array([[-1.0, 2.0]]), "relu")
        array([[0., 2.]])
    """
    xp = _backend.xp_of(z)
    zz = xp.array(z, copy=True)
    a = xp.empty_like(zz)
    bias_act_(xp.zeros(zz.shape[1], zz.dtype), zz, a, name, alpha)
    return a
