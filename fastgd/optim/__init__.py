"""Optimizer classes with torch.optim's names, defaults and update formulas."""

from fastgd.optim.adadelta import Adadelta
from fastgd.optim.adagrad import Adagrad
from fastgd.optim.adam import Adam, AdamW
from fastgd.optim.adamax import Adamax
from fastgd.optim.base import Optimizer
from fastgd.optim.lion import Lion
from fastgd.optim.nadam import NAdam
from fastgd.optim.radam import RAdam
from fastgd.optim.rmsprop import RMSprop
from fastgd.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
]
