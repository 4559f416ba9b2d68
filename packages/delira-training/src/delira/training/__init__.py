"""delira.training: Trainers, callbacks, metrics, loggers, the cross-validating Experiment and the delira CLI.

Importing this package imports neither torch nor TensorFlow: ``PyTorchNetworkTrainer``,
``TfNetworkTrainer`` and ``Predictor`` are loaded on first access.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from delira.training import callbacks, loggers, metrics
from delira.training.callbacks import Callback, EarlyStopping, GanSampleGrid, ModelCheckpoint
from delira.training.config import ConfigError, load_config
from delira.training.experiment import Experiment, aggregate
from delira.training.seed import seed_everything
from delira.training.trainer_base import BaseNetworkTrainer, NonFiniteLossError

try:
    __version__ = version("delira-training")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "PyTorchNetworkTrainer": "delira.training.trainer_torch",
    "TfNetworkTrainer": "delira.training.trainer_tf",
    "Predictor": "delira.training.predictor",
}

__all__ = [
    "BaseNetworkTrainer",
    "Callback",
    "ConfigError",
    "EarlyStopping",
    "Experiment",
    "GanSampleGrid",
    "ModelCheckpoint",
    "NonFiniteLossError",
    "Predictor",
    "PyTorchNetworkTrainer",
    "TfNetworkTrainer",
    "__version__",
    "aggregate",
    "callbacks",
    "load_config",
    "loggers",
    "metrics",
    "seed_everything",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'delira.training' has no attribute {name!r}")
