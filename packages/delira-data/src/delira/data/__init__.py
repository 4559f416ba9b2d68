"""delira.data: Datasets, dataset formats, samplers, splits and a deterministic multi-process loader for 2D/3D medical images."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("delira-data")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
