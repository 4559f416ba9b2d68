"""Loggers of training metrics: TensorBoard event files, CSV, MLflow, Weights & Biases; training
curves as PNG.

A logger has ``log_metrics(metrics: dict[str, float], step: int)`` and ``close()`` (the trainer
calls them once per epoch and when ``fit`` ends), optionally ``resume(history)``. The tracking
loggers (:class:`MLflowLogger`, :class:`WandbLogger`) also log the config as parameters and the
fold's files as artifacts when their run finishes; their libraries are optional extras
(``delira-training[mlflow]``, ``delira-training[wandb]``), imported only when a logger is created.
"""

from __future__ import annotations

from delira.training.loggers._run import EXPERIMENT_ARTIFACTS, FOLD_ARTIFACTS, flatten_params
from delira.training.loggers.csv import CSVLogger
from delira.training.loggers.curves import plot_curves
from delira.training.loggers.mlflow import MLflowLogger
from delira.training.loggers.tensorboard import TensorBoardLogger
from delira.training.loggers.wandb import WandbLogger

__all__ = [
    "EXPERIMENT_ARTIFACTS",
    "FOLD_ARTIFACTS",
    "CSVLogger",
    "MLflowLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "flatten_params",
    "plot_curves",
]
