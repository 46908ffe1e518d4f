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


def by_name(name: str) -> type[Optimizer]:
    """The optimizer class named ``name``, case-insensitively (``"adamw"`` -> AdamW).

    Raises:
        ValueError: no such optimizer; the message lists the names.
    """
    classes = {c.__name__.lower(): c for c in (SGD, Adadelta, Adagrad, Adam, AdamW, Adamax,
                                               Lion, NAdam, RAdam, RMSprop)}
    cls = classes.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; choose from "
                         f"{', '.join(c.__name__ for c in classes.values())}")
    return cls


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
    "by_name",
]
