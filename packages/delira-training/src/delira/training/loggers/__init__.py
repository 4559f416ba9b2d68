"""Loggers of training metrics: TensorBoard event files, CSV, MLflow; training curves as PNG.

A logger has ``log_metrics(metrics: dict[str, float], step: int)`` and ``close()``.
"""

from __future__ import annotations

from delira.training.loggers.csv import CSVLogger
from delira.training.loggers.curves import plot_curves
from delira.training.loggers.mlflow import MLflowLogger
from delira.training.loggers.tensorboard import TensorBoardLogger

__all__ = ["CSVLogger", "MLflowLogger", "TensorBoardLogger", "plot_curves"]
