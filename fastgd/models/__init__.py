"""Autograd-free models.

Losses, activations, initializers, and linear / logistic / MLP models whose gradients are
written by hand and computed with fused kernels.
"""

from fastgd.models.activations import ACTIVATIONS, activate
from fastgd.models.init import INITIALIZERS, initialize
from fastgd.models.losses import LOSSES, loss_and_grad
from fastgd.models.mlp import MLP, LinearRegression, LogisticRegression

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "LOSSES",
    "MLP",
    "LinearRegression",
    "LogisticRegression",
    "activate",
    "initialize",
    "loss_and_grad",
]
