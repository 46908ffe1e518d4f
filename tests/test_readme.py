"""Every Python example of the README runs, in order, as a reader would run them.

The blocks share one namespace (a reader's session) that starts with ``numpy as np`` and
``fastgd`` imported. A block that needs an optional package skips, naming it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from tests.cuda_support import gpu_missing

README = Path(__file__).parents[1] / "README.md"
BLOCKS = [(README.read_text()[: m.start()].count("\n") + 2, m.group(1))
          for m in re.finditer(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)]
_session: dict = {}


def _needs(code: str) -> str | None:
    """Why a block cannot run here, or None."""
    if re.search(r"^\s*import cupy", code, re.M):
        return gpu_missing()
    for module in re.findall(r"^\s*(?:from|import) (\w+)", code, re.M):
        if module not in ("fastgd", "numpy") and importlib.util.find_spec(module) is None:
            return f"needs {module}, which is not installed"
    return None


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 9  # the regex still finds them all


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_example_runs(line, code):
    if not _session:
        exec("import numpy as np\nimport fastgd\n", _session)
    reason = _needs(code)
    if reason:
        pytest.skip(reason)
    exec(compile(code, f"README.md:{line}", "exec"), _session)
