"""Loading of the compiled extension ``delira.augment._C``.

The extension is optional at import time: when it is missing (a source checkout that was never
built, a platform without a compiler) ``delira.augment`` still imports, ``build_info()`` says so,
and the operations fall back to their pure-Python implementations.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

_C: ModuleType | None
IMPORT_ERROR: str | None


def _load_from(path: str) -> ModuleType:
    """Load the extension from ``path`` (a development hook: e.g. a sanitizer build of the superbuild)."""
    import importlib.machinery
    import importlib.util
    import sys

    loader = importlib.machinery.ExtensionFileLoader("delira.augment._C", path)
    spec = importlib.util.spec_from_file_location("delira.augment._C", path, loader=loader)
    if spec is None:
        raise ImportError(f"DELIRA_AUGMENT_EXTENSION={path!r} is not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["delira.augment._C"] = module
    return module


try:
    if os.environ.get("DELIRA_AUGMENT_EXTENSION"):
        _C = _load_from(os.environ["DELIRA_AUGMENT_EXTENSION"])
    else:
        from delira.augment import _C  # type: ignore[attr-defined, no-redef]

    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only in a build without the extension
    _C = None
    IMPORT_ERROR = str(exc)

_warned = False


def warn_fallback(operation: str) -> None:
    """Warn once per process that ``operation`` runs without the compiled extension."""
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"delira.augment: the compiled extension is not available ({IMPORT_ERROR}); "
        f"{operation} and the other operations run on the slower pure-Python fallback. "
        "Reinstall delira-augment with a C++ compiler present to build it.",
        RuntimeWarning,
        stacklevel=3,
    )
