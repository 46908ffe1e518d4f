"""Optimizer classes with torch.optim's names, defaults and update formulas.

The classes are the entries of :data:`fastgd.optim.registry.RULES`, exported here by name.
"""

from fastgd.optim.base import Optimizer
from fastgd.optim.registry import RULES, by_name

globals().update({_rule.name: _rule.cls for _rule in RULES.values()})

__all__ = ["Optimizer", "by_name", *sorted(RULES)]
