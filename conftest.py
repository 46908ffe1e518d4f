"""Doctests whose examples need an optional package skip, naming it, when it is absent.

The test run collects the docstring examples of ``fastgd/`` (``--doctest-modules``). Most
need only NumPy and Numba; those listed in :data:`NEEDS` need an optional package and are
reported as skipped without it (a module that imports the package at its top cannot even
be collected then: its collection is reported as skipped instead of as an error).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Generator
from typing import Any

import pytest

#: docstring (module or object, by qualified-name prefix) -> the package its example needs
NEEDS = {
    "fastgd.sklearn": "sklearn",
    "fastgd._sklearn_mlp": "sklearn",
    "fastgd._sklearn_linear": "sklearn",
    "fastgd.distributed.DataParallel": "mpi4py",
}


def _missing(package: str) -> bool:
    return importlib.util.find_spec(package) is None


def _needed(name: str) -> str | None:
    for prefix, package in NEEDS.items():
        if (name == prefix or name.startswith(prefix + ".")) and _missing(package):
            return package
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a doctest whose example needs a missing package."""
    if isinstance(item, pytest.DoctestItem) and (package := _needed(item.name)):
        pytest.skip(f"this example needs {package}, which is not installed")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """Report a module that cannot be imported without its optional package as skipped."""
    report = yield
    if report.failed and type(collector).__name__ == "DoctestModule":
        rel = collector.path.relative_to(collector.config.rootpath).with_suffix("")
        package = _needed(".".join(rel.parts))
        if package is not None and f"No module named '{package}" in str(report.longrepr):
            report.outcome = "skipped"
            report.longrepr = (str(collector.path), 0,
                               f"Skipped: its examples need {package}, which is not installed")
    return report
