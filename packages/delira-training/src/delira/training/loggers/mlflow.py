"""An MLflow logger (optional dependency: ``pip install mlflow``), local file store by default."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

__all__ = ["MLflowLogger"]


def _import_mlflow() -> Any:
    try:
        return importlib.import_module("mlflow")
    except ImportError as exc:
        raise ImportError(
            "MLflowLogger needs mlflow, which is not installed; install it with `pip install mlflow` "
            "(or `pip install 'delira-training[mlflow]'`), or use the CSV / TensorBoard loggers"
        ) from exc


class MLflowLogger:
    """Logs metrics (and parameters) to an MLflow run.

    Args:
        tracking_dir: a folder for a local file store (``file:`` URI), or None for MLflow's default
            tracking URI.
        experiment_name: the MLflow experiment.
        run_name: the run's name.
        params: parameters to log once, ``{name: value}``.

    Raises:
        ImportError: mlflow is not installed (the message says how to install it).
    """

    def __init__(
        self,
        tracking_dir: str | os.PathLike[str] | None = None,
        experiment_name: str = "delira",
        run_name: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self._mlflow = mlflow = _import_mlflow()
        if tracking_dir is not None:
            mlflow.set_tracking_uri(Path(tracking_dir).resolve().as_uri())
        mlflow.set_experiment(experiment_name)
        self.run = mlflow.start_run(run_name=run_name)
        if params:
            mlflow.log_params({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log the numeric entries of ``metrics`` at ``step``."""
        values = {
            k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        """End the run."""
        if self.run is not None:
            self._mlflow.end_run()
            self.run = None
