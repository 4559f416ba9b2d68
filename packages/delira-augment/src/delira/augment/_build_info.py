"""How ``delira.augment`` was built and what it can run on."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from delira.augment import _extension


def package_version() -> str:
    """Installed version of the ``delira-augment`` distribution."""
    try:
        return version("delira-augment")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def build_info() -> dict[str, Any]:
    """Describe the build of the compiled extension.

    Returns:
        A dict with at least
        ``version`` (str), ``compiled`` (bool, whether the C++ extension loaded),
        ``cuda_compiled`` (bool), ``cuda_version`` (str such as ``"13.0"`` or None),
        ``cuda_architectures`` (str such as ``"80;90"`` or None), ``openmp`` (bool),
        ``num_threads`` (int, threads of the CPU executor), ``compiler`` (str or None) and
        ``import_error`` (str or None, why the extension did not load).
    """
    info: dict[str, Any] = {
        "version": package_version(),
        "compiled": False,
        "cuda_compiled": False,
        "cuda_version": None,
        "cuda_architectures": None,
        "openmp": False,
        "num_threads": 1,
        "compiler": None,
        "import_error": _extension.IMPORT_ERROR,
    }
    if _extension._C is not None:
        info.update(_extension._C.build_info())
    return info
