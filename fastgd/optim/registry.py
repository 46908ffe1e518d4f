"""The registry of update rules: one entry per optimizer, the table everything else reads.

An entry names the optimizer class, its functional function, its kernel module (the
same stem in ``kernels/cpu`` and ``kernels/cuda``), its reference formula in
``tests/reference.py``, the option sets the parity tests run, the torch.optim counterpart,
the benchmark configuration and NumPy peer, and its names on the command line. The class
lookup (:func:`by_name`), ``fastgd.__all__``, :mod:`fastgd.functional`, the command line's
optimizer lists, the parity, torch and coverage tests and the benchmarks all iterate
:data:`RULES`; a coverage test fails when a class, kernel, twin or reference is missing
from it, or an entry names something that does not exist.

Adding an elementwise rule is: its two kernel files, its module in ``fastgd/optim``
(launcher, functional function, class with its hyperparameter table), one entry here, its
reference formula and its README line (README, "Adding an optimizer").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastgd.optim import (
    adadelta,
    adafactor,
    adagrad,
    adam,
    adamax,
    asgd,
    lbfgs,
    lion,
    muon,
    nadam,
    radam,
    rmsprop,
    rprop,
    sgd,
    sparse_adam,
)
from fastgd.optim.base import Optimizer

__all__ = ["RULES", "Rule", "by_name", "command_names", "generic"]


@dataclass(frozen=True)
class Rule:
    """One update rule.

    Attributes:
        cls: the optimizer class (its ``__name__`` is the rule's name).
        functional: the stateless in-place function of :mod:`fastgd.functional`, or None
            (LBFGS, which needs a closure).
        kernel: the kernel module stem in ``kernels/cpu`` and ``kernels/cuda``, or None
            (LBFGS: its inner products and vector updates are the shared reductions).
        options: hyperparameter sets the parity, torch, resume and CUDA tests run (each
            with float32 and float64, on every layout).
        generic: whether the generic suites apply: dense gradients, parameters of any shape
            (0-d and size 0 included), every layout. SparseAdam (sparse gradients), Muon
            (2-D parameters) and LBFGS (a closure) have suites of their own.
        bench: the configuration ``fastgd bench`` times.
        torch: the torch.optim class of the same rule, or None.
        torch_fused: whether torch has a fused CPU kernel for it (the benchmarks' peer).
        numpy_peer: the name of its careful in-place NumPy implementation in
            ``fastgd._bench.peers``, or None.
        reference: the naive NumPy rule in ``tests/reference.py`` (None for LBFGS, whose
            reference is torch.optim.LBFGS itself).
        commands: ``fastgd train --optimizer`` / ``compare --optimizers`` names ->
            (keyword arguments, mini-batches?): the settings that name trains with.
    """

    cls: type[Optimizer]
    functional: Callable[..., Any] | None
    kernel: str | None
    options: tuple[Mapping[str, Any], ...]
    bench: Mapping[str, Any]
    generic: bool = True
    torch: str | None = None
    torch_fused: bool = False
    numpy_peer: str | None = None
    reference: str | None = ""
    commands: Mapping[str, tuple[Mapping[str, Any], bool]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The class name, e.g. ``"Adam"``."""
        return self.cls.__name__


def _rules(*rules: Rule) -> dict[str, Rule]:
    out = {}
    for r in rules:
        if r.name in out:
            raise ValueError(f"two registry entries for {r.name}")
        out[r.name] = r if r.reference != "" else Rule(**{**r.__dict__,
                                                            "reference": f"ref_{r.name.lower()}"})
    return out


RULES: dict[str, Rule] = _rules(
    Rule(sgd.SGD, sgd.sgd_, "sgd", torch="SGD", torch_fused=True, numpy_peer="sgd",
         bench={"lr": 0.01, "momentum": 0.9},
         options=({"lr": 0.1},
                  {"lr": 0.1, "weight_decay": 0.05, "maximize": True},
                  {"lr": 0.05, "momentum": 0.9},
                  {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
                  {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
         commands={"gd": ({"lr": 0.5}, False),  # plain batch gradient descent
                   "sgd": ({"lr": 0.05}, True),
                   "momentum": ({"lr": 0.02, "momentum": 0.9}, True),
                   "nesterov": ({"lr": 0.02, "momentum": 0.9, "nesterov": True}, True)}),
    Rule(adagrad.Adagrad, adagrad.adagrad_, "adagrad", torch="Adagrad", torch_fused=True,
         numpy_peer="adagrad", bench={"lr": 0.01},
         options=({"lr": 0.1},
                  {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1,
                   "initial_accumulator_value": 0.2},
                  {"lr": 0.1, "eps": 1e-3, "maximize": True}),
         commands={"adagrad": ({"lr": 0.05}, True)}),
    Rule(adadelta.Adadelta, adadelta.adadelta_, "adadelta", torch="Adadelta",
         numpy_peer="adadelta", bench={},
         options=({},
                  {"lr": 0.5, "rho": 0.8, "eps": 1e-4, "weight_decay": 0.05,
                   "maximize": True}),
         commands={"adadelta": ({"lr": 1.0}, True)}),
    Rule(rmsprop.RMSprop, rmsprop.rmsprop_, "rmsprop", torch="RMSprop", numpy_peer="rmsprop",
         bench={"lr": 0.01},
         options=({"lr": 0.01},
                  {"lr": 0.01, "centered": True},
                  {"lr": 0.01, "momentum": 0.9},
                  {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1,
                   "alpha": 0.9},
                  {"lr": 0.01, "eps": 1e-3, "maximize": True}),
         commands={"rmsprop": ({"lr": 1e-3}, True)}),
    Rule(adam.Adam, adam.adam_, "adam", torch="Adam", torch_fused=True, numpy_peer="adam",
         bench={"lr": 1e-3},
         options=({"lr": 0.01},
                  {"lr": 0.01, "amsgrad": True},
                  {"lr": 0.01, "weight_decay": 0.1},
                  {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                   "amsgrad": True},
                  {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-3, "maximize": True},
                  {"lr": 0.01, "eps_root": 1e-3},
                  {"lr": 0.01, "eps_mode": "hat", "eps": 1e-2, "amsgrad": True,
                   "weight_decay": 0.1}),
         commands={"adam": ({"lr": 1e-3}, True)}),
    Rule(adam.AdamW, adam.adamw_, "adam", torch="AdamW", torch_fused=True, numpy_peer="adamw",
         bench={"lr": 1e-3},
         options=({"lr": 0.01},
                  {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True, "maximize": True},
                  {"lr": 0.01, "eps_mode": "hat", "eps_root": 1e-4, "eps": 1e-3}),
         commands={"adamw": ({"lr": 1e-3}, True)}),
    Rule(adamax.Adamax, adamax.adamax_, "adamax", torch="Adamax", numpy_peer="adamax",
         bench={},
         options=({"lr": 0.01},
                  {"lr": 0.01, "betas": (0.7, 0.9), "weight_decay": 0.1, "maximize": True}),
         commands={"adamax": ({"lr": 2e-3}, True)}),
    Rule(nadam.NAdam, nadam.nadam_, "nadam", torch="NAdam", numpy_peer="nadam", bench={},
         options=({"lr": 0.01},
                  {"lr": 0.01, "weight_decay": 0.1, "momentum_decay": 0.01},
                  {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                   "maximize": True}),
         commands={"nadam": ({"lr": 2e-3}, True)}),
    Rule(radam.RAdam, radam.radam_, "radam", torch="RAdam", numpy_peer="radam", bench={},
         options=({"lr": 0.01},
                  {"lr": 0.01, "weight_decay": 0.1},
                  {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
                   "maximize": True},
                  {"lr": 0.01, "betas": (0.9, 0.9)}),
         commands={"radam": ({"lr": 1e-3}, True)}),
    Rule(asgd.ASGD, asgd.asgd_, "asgd", torch="ASGD", bench={"lr": 1e-2},
         options=({"lr": 0.01},
                  {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 3, "weight_decay": 0.1,
                   "maximize": True}),
         commands={"asgd": ({"lr": 1e-2}, True)}),
    Rule(rprop.Rprop, rprop.rprop_, "rprop", torch="Rprop", bench={"lr": 1e-2},
         options=({"lr": 0.01},
                  {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-3, 0.1),
                   "maximize": True}),
         commands={"rprop": ({"lr": 1e-3}, False)}),  # full batch: Rprop is a batch method
    Rule(adafactor.Adafactor, adafactor.adafactor_, "adafactor", torch="Adafactor",
         bench={"lr": 1e-2},
         options=({"lr": 0.01},
                  {"lr": 0.05, "beta2_decay": -0.6, "eps": (1e-4, 1e-2), "d": 1.5,
                   "weight_decay": 0.1, "maximize": True},
                  {"lr": 0.5, "eps": (None, 0.0), "d": 1.0}),
         commands={"adafactor": ({"lr": 1e-2}, True)}),
    Rule(sparse_adam.SparseAdam, sparse_adam.sparse_adam_, "sparse", generic=False,
         torch="SparseAdam", bench={"lr": 1e-3}, reference="ref_sparse_adam",
         options=({"lr": 0.01},
                  {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-4, "maximize": True})),
    Rule(muon.Muon, muon.muon_, "muon", generic=False, torch="Muon", bench={"lr": 0.02},
         options=({"lr": 0.02},
                  {"lr": 0.05, "weight_decay": 0.0, "momentum": 0.9, "nesterov": False},
                  {"lr": 0.01, "adjust_lr_fn": "match_rms_adamw", "ns_steps": 3,
                   "ns_coefficients": (2.0, -1.5, 0.5), "eps": 1e-5, "maximize": True})),
    Rule(lbfgs.LBFGS, None, None, generic=False, torch="LBFGS", reference=None,
         bench={},
         options=({},
                  {"lr": 0.5, "max_iter": 7, "history_size": 3, "tolerance_grad": 1e-9},
                  {"line_search_fn": "strong_wolfe", "history_size": 5, "max_eval": 30})),
    Rule(lion.Lion, lion.lion_, "lion", numpy_peer="lion", bench={"lr": 1e-4},
         options=({"lr": 0.01},
                  {"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.1,
                   "maximize": True}),
         commands={"lion": ({"lr": 1e-4}, True)}),
)


def generic() -> list[str]:
    """The names of the rules the generic suites and benchmarks cover (see ``Rule.generic``)."""
    return [name for name, rule in RULES.items() if rule.generic]


def by_name(name: str) -> type[Optimizer]:
    """The optimizer class named ``name``, case-insensitively (``"adamw"`` -> AdamW).

    Raises:
        ValueError: no such optimizer; the message lists the names.
    """
    classes = {r.name.lower(): r.cls for r in RULES.values()}
    cls = classes.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; choose from "
                         f"{', '.join(r.name for r in RULES.values())}")
    return cls


def command_names() -> dict[str, tuple[Rule, Mapping[str, Any], bool]]:
    """``fastgd train`` / ``compare`` optimizer names -> (rule, settings, mini-batches?)."""
    out = {}
    for rule in RULES.values():
        for alias, (kwargs, minibatch) in rule.commands.items():
            if alias in out:
                raise ValueError(f"command name {alias!r} is used twice in the registry")
            out[alias] = (rule, kwargs, minibatch)
    return out
