r"""Losses on the model output, with their gradients in the same fused pass.

=============  ===================================================  ========================
name           loss (mean over the batch)                          for
=============  ===================================================  ========================
mse            :math:`\frac1{N K}\sum (z - y)^2` (torch's MSELoss)  regression
huber          :math:`\tfrac12 r^2` if :math:`|r| \le \delta` else
               :math:`\delta(|r| - \tfrac12\delta)`                 robust regression
bce            :math:`\max(z,0) - zy + \log(1+e^{-|z|})` on logits  binary classification
softmax_xent   :math:`\log\sum_j e^{z_j} - z_y` on logits           multiclass
=============  ===================================================  ========================

Each kernel overwrites the output :math:`z` with :math:`\partial L/\partial z` (divided by
the batch size) and writes the per-row or per-element loss; the cross-entropies are
computed from logits, stably, with the softmax / sigmoid never formed separately.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["LOSSES", "loss_and_grad", "loss_and_grad_"]

LOSSES = ("mse", "huber", "bce", "softmax_xent")


def loss_and_grad_(name: str, z: Any, y: Any, loss_buf: Any, delta: float = 1.0) -> float:
    """In place: ``z <- dL/dz``; returns the mean loss. ``loss_buf`` is a workspace."""
    return float(mean_loss_and_grad_(name, z, y, loss_buf, delta))


def mean_loss_and_grad_(name: str, z: Any, y: Any, loss_buf: Any, delta: float = 1.0) -> Any:
    """:func:`loss_and_grad_` without reading the loss on the host.

    Returns:
        The mean loss: a Python float for NumPy arrays, a 0-d float64 CuPy array for CuPy
        arrays (so a training step need not wait for the GPU).
    """
    if name == "softmax_xent":
        n = z.shape[0]
        _backend.launch("nn", "softmax_xent", (), y, 1.0 / max(n, 1), z, loss_buf)
        return _backend.as_float64(loss_buf.sum()) / max(n, 1)
    zf, yf, lf = z.reshape(-1), y.reshape(-1), loss_buf.reshape(-1)
    n = zf.size if name in ("mse", "huber") else z.shape[0]
    inv = 1.0 / max(n, 1)
    if name == "huber":
        _backend.launch("nn", "huber", (), yf, float(delta), inv, zf, lf)
        return _backend.as_float64(lf.sum()) * inv
    kernel = {"mse": "mse", "bce": "bce_logits"}.get(name)
    if kernel is None:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    _backend.launch("nn", kernel, (), yf, inv, zf, lf)
    return _backend.as_float64(lf.sum()) * inv


def loss_and_grad(name: str, z: Any, y: Any, delta: float = 1.0) -> tuple[float, Any]:
    """The mean loss and its gradient with respect to ``z``, as new arrays.

    Args:
        name: one of :data:`LOSSES`.
        z: the model output (logits for the cross-entropies), ``(N,)`` or ``(N, K)``.
        y: targets: same shape as ``z`` (mse, huber, bce: 0/1) or integer labels ``(N,)``
            (softmax_xent).
        delta: Huber's threshold.

    Example:
        >>> import numpy as np
        >>> loss, g = loss_and_grad("mse", np.array([1.0, 3.0]), np.array([0.0, 3.0]))
        >>> loss, g
        (0.5, array([1., 0.]))
    """
    xp = _backend.xp_of(z)
    g = xp.array(z, copy=True)
    if name == "softmax_xent":
        y = xp.asarray(y, dtype=np.int64)
        buf = xp.empty(g.shape[0], g.dtype)
    else:
        y = xp.asarray(y, dtype=g.dtype)
        buf = xp.empty_like(g)
    return loss_and_grad_(name, g, y, buf, delta), g
