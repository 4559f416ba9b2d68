"""The examples of packages/delira-augment/README.md run as written, with no other Delira package importable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "packages" / "delira-augment" / "README.md"

# Blocks any other Delira package, so the examples prove that delira-augment stands alone.
_BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:2] in (["delira", "data"], ["delira", "io"], ["delira", "models"], ["delira", "training"]):
            raise ImportError(f"{name} is blocked: the delira-augment examples must not need it")
sys.meta_path.insert(0, _Block())
"""


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _marks(code: str):
    if "import torch" in code:
        return [pytest.mark.torch]
    if "import tensorflow" in code:
        return [pytest.mark.tf]
    return []


@pytest.mark.parametrize(
    "code", [pytest.param(c, marks=_marks(c), id=f"example{i}") for i, c in enumerate(_examples())]
)
def test_readme_example_runs_standalone(code):
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKER + code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_has_the_three_standalone_examples():
    codes = _examples()
    assert any("DataLoader" in c and "import torch" in c for c in codes)
    assert any("tf.data" in c for c in codes)
    assert any("import torch" not in c and "tensorflow" not in c for c in codes)
