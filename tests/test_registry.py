"""The registry covers every optimizer, kernel, twin, reference and peer, and nothing else.

Modeled on Chainer's ``TestAllOptimizersCoverage``: adding an optimizer class, a kernel
module or a reference formula without its registry entry fails here, and so does an entry
that names something that does not exist.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import fastgd
import fastgd.functional as F
import fastgd.optim
from fastgd._bench.peers import PEERS
from fastgd.optim.base import Optimizer
from fastgd.optim.registry import RULES, Rule, by_name, command_names
from tests import reference as R

KERNELS = Path(importlib.import_module("fastgd.kernels").__path__[0])
#: kernel modules that serve the models, clipping and data movement, not an update rule
NOT_RULES = {"_jit", "_elementwise", "average", "axpy", "batch", "blas", "gather", "multi", "nn",
             "reduce"}


def _optimizer_classes():
    found = set()
    for info in pkgutil.iter_modules(fastgd.optim.__path__):
        module = importlib.import_module(f"fastgd.optim.{info.name}")
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, Optimizer) and obj is not Optimizer
                    and not inspect.isabstract(obj) and obj.__module__ == module.__name__):
                found.add(obj)
    return found


def _kernel_modules(backend):
    return {p.stem for p in (KERNELS / backend).glob("*.py") if p.stem != "__init__"}


def coverage_problems(rules: dict[str, Rule]) -> list[str]:
    """Everything the registry ``rules`` misses or names in vain."""
    problems = []
    classes = {r.cls for r in rules.values()}
    for cls in _optimizer_classes() - classes:
        problems.append(f"optimizer class {cls.__name__} has no registry entry")
    for name, rule in rules.items():
        if getattr(fastgd, name, None) is not rule.cls or name not in fastgd.__all__:
            problems.append(f"{name} is not exported from fastgd")
        if getattr(fastgd.optim, name, None) is not rule.cls:
            problems.append(f"{name} is not exported from fastgd.optim")
        fn = rule.functional.__name__ if rule.functional else None
        if fn and (getattr(F, fn, None) is not rule.functional or fn not in F.__all__):
            problems.append(f"{name}'s functional {fn} is not in fastgd.functional")
        if rule.reference is not None and not hasattr(R, rule.reference):
            problems.append(f"{name}'s reference {rule.reference} is not in tests/reference.py")
        if rule.numpy_peer is not None and rule.numpy_peer not in PEERS:
            problems.append(f"{name}'s NumPy peer {rule.numpy_peer} does not exist")
        for backend in ("cpu", "cuda"):
            if rule.kernel is not None and rule.kernel not in _kernel_modules(backend):
                problems.append(f"{name}'s kernel module {rule.kernel} is not in kernels/{backend}")
        if not rule.options:
            problems.append(f"{name} has no option sets to test")
    used = {r.kernel for r in rules.values()}
    for backend in ("cpu", "cuda"):
        for stem in _kernel_modules(backend) - used - NOT_RULES:
            problems.append(f"kernels/{backend}/{stem}.py belongs to no registry entry")
    refs = {n for n in vars(R) if n.startswith("ref_") and callable(getattr(R, n))}
    for ref in refs - {r.reference for r in rules.values()}:
        problems.append(f"tests/reference.py's {ref} belongs to no registry entry")
    for peer in set(PEERS) - {r.numpy_peer for r in rules.values()}:
        problems.append(f"the NumPy peer {peer} belongs to no registry entry")
    return problems


def test_the_registry_covers_everything():
    assert coverage_problems(RULES) == []


@pytest.mark.parametrize("removed", ["Lion", "Adam"])
def test_a_missing_entry_is_caught(removed):
    rules = {k: v for k, v in RULES.items() if k != removed}
    problems = "\n".join(coverage_problems(rules))
    assert f"optimizer class {removed} has no registry entry" in problems
    assert f"ref_{removed.lower()} belongs to no registry entry" in problems
    if removed == "Lion":  # its kernel and peer are its own; Adam's are shared with AdamW
        assert "kernels/cpu/lion.py belongs to no registry entry" in problems
        assert "kernels/cuda/lion.py belongs to no registry entry" in problems
        assert "the NumPy peer lion belongs to no registry entry" in problems


def test_an_entry_naming_what_does_not_exist_is_caught():
    bogus = Rule(fastgd.Lion, F.lion_, "nokernel", options=(), bench={},
                 reference="ref_nothing", numpy_peer="nothing")
    problems = "\n".join(coverage_problems({**RULES, "Lion": bogus}))
    for text in ("kernel module nokernel is not in kernels/cpu", "ref_nothing is not in",
                 "NumPy peer nothing does not exist", "Lion has no option sets",
                 "kernels/cpu/lion.py belongs to no registry entry"):
        assert text in problems


def test_every_option_set_and_benchmark_configuration_constructs():
    import numpy as np

    for rule in RULES.values():
        for hp in (*rule.options, rule.bench):
            rule.cls([np.zeros((2, 3))], **hp)
        for alias, (kw, _) in rule.commands.items():
            assert alias == alias.lower(), alias
            rule.cls([np.zeros((2, 3))], **kw)


def test_lookup_and_command_names_come_from_the_registry():
    assert {by_name(n.lower()) for n in RULES} == {r.cls for r in RULES.values()}
    names = command_names()
    assert names["gd"][0] is RULES["SGD"] and names["gd"][2] is False
    assert set(names) >= {r.name.lower() for r in RULES.values() if r.generic}


def test_torch_counterparts_exist():
    torch = pytest.importorskip("torch")
    for rule in RULES.values():
        if rule.torch is not None:
            assert hasattr(torch.optim, rule.torch), rule.torch
