"""``import delira.data`` stays light: numpy only, no deep-learning framework."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_import_frameworks_or_scipy():
    code = (
        "import sys, delira.data, delira.data.loader, delira.data.formats, delira.data.preprocessing;"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'scipy', 'nibabel', 'delira.io') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_exported():
    import delira.data as dd

    for name in dd.__all__:
        assert hasattr(dd, name), name
    assert not hasattr(dd, "__file__") or dd.__file__.endswith("__init__.py")
