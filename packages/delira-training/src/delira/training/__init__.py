"""delira.training: Trainers, callbacks, metrics, loggers, the cross-validating Experiment and the delira CLI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("delira-training")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
