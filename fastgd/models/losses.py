r"""Losses on the model output, with their gradients in the same fused pass.

==============  ===================================================  =======================
name            loss (mean over the batch)                          for
==============  ===================================================  =======================
mse             :math:`\frac1{N K}\sum (z - y)^2` (torch's MSELoss)  regression
squared_error   :math:`\frac1{2N}\sum (z - y)^2` (scikit-learn's     regression
                gradient: :math:`(z - y)/N`)
huber           :math:`\tfrac12 r^2` if :math:`|r| \le \delta` else
                :math:`\delta(|r| - \tfrac12\delta)`                 robust regression
poisson         :math:`\frac1N\sum e^z - yz + y\log y - y` (log link)  counts
bce             :math:`\max(z,0) - zy + \log(1+e^{-|z|})` on logits,  binary, multilabel
                summed over outputs
softmax_xent    :math:`\log\sum_j e^{z_j} - z_y` on logits           multiclass
==============  ===================================================  =======================

Each kernel overwrites the output :math:`z` with :math:`\partial L/\partial z` (divided by
the batch size) and writes the per-row or per-element loss; the cross-entropies are
computed from logits, stably, with the softmax / sigmoid never formed separately. With
sample weights :math:`w`, the mean over rows is :math:`\sum_i w_i l_i / \sum_i w_i` and
each row of the gradient is scaled by its weight.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastgd import _backend

__all__ = ["LOSSES", "loss_and_grad", "loss_and_grad_"]

LOSSES = ("mse", "squared_error", "huber", "poisson", "bce", "softmax_xent")
#: losses averaged over every element (the others: summed over outputs, averaged over rows)
_PER_ELEMENT = ("mse", "huber")


def loss_and_grad_(name: str, z: Any, y: Any, loss_buf: Any, delta: float = 1.0) -> float:
    """In place: ``z <- dL/dz``; returns the mean loss. ``loss_buf`` is a workspace."""
    return float(mean_loss_and_grad_(name, z, y, loss_buf, delta))


def inverse_total(name: str, rows: int, cols: int, weights: Any = None,
                  weight_sum: float | None = None) -> float:
    """The factor that turns a loss sum into the mean loss of :func:`mean_loss_and_grad_`.

    One over the rows (or the sum of their weights), times the outputs per row for the
    per-element losses (mse, huber); 1 where the total is 0.
    """
    if weights is None:
        total = float(rows)
    else:
        total = float(weights.sum()) if weight_sum is None else float(weight_sum)
    if name in _PER_ELEMENT:
        total *= cols
    return 1.0 / total if total > 0 else 1.0


def loss_kernel(name: str, z: Any, y: Any, loss_buf: Any, delta: float = 1.0,
                weights: Any = None, weight_sum: float | None = None
                ) -> tuple[str, tuple[Any, ...], float]:
    """The ``nn`` kernel computing loss ``name`` in place, its arguments, its sum's factor.

    The factor turns the sum of ``loss_buf`` into the mean loss (:func:`inverse_total`'s,
    halved for squared_error). Shared by :func:`mean_loss_and_grad_` and the MLP's
    compiled pass (``kernels/cpu/batch.py``), which make the same call.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    rows = z.shape[0]
    inv = inverse_total(name, rows, z.size // max(rows, 1), weights, weight_sum)
    if name == "softmax_xent":
        return "softmax_xent", (y, inv, z, loss_buf), inv
    zf, yf, lf = z.reshape(-1), y.reshape(-1), loss_buf.reshape(-1)
    if name == "huber":
        return "huber", (yf, float(delta), inv, zf, lf), inv
    if name == "squared_error":  # the mse kernel: z <- 2 (z - y) inv, loss (z - y)^2
        return "mse", (yf, inv / 2, zf, lf), inv / 2
    kernel = {"mse": "mse", "bce": "bce_logits", "poisson": "poisson"}[name]
    return kernel, (yf, inv, zf, lf), inv


def mean_loss_and_grad_(name: str, z: Any, y: Any, loss_buf: Any, delta: float = 1.0,
                        weights: Any = None, weight_sum: float | None = None) -> Any:
    """:func:`loss_and_grad_` without reading the loss on the host.

    Args:
        name: one of :data:`LOSSES`.
        z: the model output, overwritten with the loss's gradient.
        y: the targets.
        loss_buf: a workspace of ``z``'s shape (``(N,)`` for softmax_xent).
        delta: Huber's threshold.
        weights: sample weights ``(N,)`` (None: every row counts 1).
        weight_sum: their sum (computed if not given).

    Returns:
        The mean loss: a Python float for NumPy arrays, a 0-d float64 CuPy array for CuPy
        arrays (so a training step need not wait for the GPU).
    """
    kernel, args, inv = loss_kernel(name, z, y, loss_buf, delta, weights, weight_sum)
    _backend.launch("nn", kernel, (), *args)
    if weights is not None:
        _backend.launch("nn", "rowscale", (), weights, z.reshape(z.shape[0], -1))
    return loss_total(loss_buf, z.shape[0], weights) * inv


def loss_total(loss_buf: Any, rows: int, weights: Any = None) -> Any:
    """The loss kernel's buffer summed (over rows weighted by ``weights``), as float64.

    Shared by :func:`mean_loss_and_grad_` and the MLP's compiled pass.
    """
    if weights is None:
        return _backend.as_float64(loss_buf.sum())
    per_row = loss_buf.reshape(rows, -1).sum(axis=1)
    return _backend.as_float64(per_row @ weights.astype(per_row.dtype, copy=False))


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
