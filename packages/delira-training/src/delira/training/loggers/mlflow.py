"""An MLflow logger (the ``mlflow`` extra): one MLflow run per training (per fold), optionally
nested under a parent run of the experiment; params from the nested config, metrics per epoch,
the fold's files as artifacts when the run finishes.

It talks to the tracking store through :class:`mlflow.tracking.MlflowClient` only, so it neither
reads nor changes mlflow's global active run or tracking URI.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from delira.training.loggers._run import FOLD_ARTIFACTS, RunLogger, flatten_params, param_value, require

__all__ = ["MLflowLogger", "resolve_tracking_uri"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_PARAMS_PER_BATCH = 100  # mlflow's limits of one log_batch call
_METRICS_PER_BATCH = 1000
_MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(
    tracking_uri: str | os.PathLike[str] | None,
) -> tuple[str | None, str | None]:
    """``(tracking URI, default artifact location)`` for ``tracking_uri``:

    - None: mlflow's own choice (``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the
      working directory), no artifact location;
    - a URI (``sqlite:///...``, ``file:///...``, ``http://...``, ``databricks``): used as it is;
    - a folder: a local store in it, ``sqlite:///<folder>/mlflow.db`` with the artifacts in
      ``<folder>/artifacts`` (the folder is created).
    """
    if tracking_uri is None:
        return None, None
    if not isinstance(tracking_uri, (str, os.PathLike)):
        raise TypeError(
            f"tracking_uri must be a folder, a tracking URI string or None, got {type(tracking_uri).__name__}"
        )
    text = os.fspath(tracking_uri)
    if isinstance(tracking_uri, str) and (_URI.match(text) or text == "databricks"):
        return text, None
    folder = Path(text).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"tracking_uri {text!r} is a file; pass a folder for a local store or a URI such as "
            f"'sqlite:///{folder}'"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


class MLflowLogger(RunLogger):
    """Logs one run to MLflow: parameters, tags, per-epoch metrics (``step`` = the 0-based epoch)
    and, when the run finishes, the fold's files as artifacts.

    Args:
        tracking_uri: a folder for a local store (``<folder>/mlflow.db``, artifacts in
            ``<folder>/artifacts``), a tracking URI (``sqlite:///runs/mlflow.db``,
            ``http://host:5000``) or None for mlflow's default (``MLFLOW_TRACKING_URI``).
        experiment_name: the MLflow experiment (created when missing).
        run_name: the run's name (e.g. ``"fold_0"``); None lets MLflow pick one.
        params: parameters, e.g. the whole config: nested mappings are flattened to dotted keys
            (``data.augmentation.rotation``), values written as text (non-strings as JSON).
        tags: ``{name: value}`` tags of the run.
        parent_run_id: nest the run under this run (the ``mlflow.parentRunId`` tag); see
            :meth:`child`.
        run_id: continue this existing run instead of creating one (its earlier metrics are
            kept; :meth:`resume` logs only the epochs it lacks).
        artifact_location: where a newly created experiment stores its artifacts (default: the
            store folder's ``artifacts`` when ``tracking_uri`` is a folder, else mlflow's).
        artifacts_dir: the folder whose ``artifacts`` are logged when the run finishes (the
            trainer's ``save_dir``, the fold folder).
        artifacts: paths or glob patterns relative to ``artifacts_dir`` (missing ones are
            skipped); default :data:`~delira.training.loggers.FOLD_ARTIFACTS`: the best
            checkpoint, ``metrics.csv``, ``curves.png``, ``result.json``, ``cases.csv``. They keep
            their relative paths in the run (``checkpoints/best.safetensors``).
        finish_on_close: end the run when the trainer closes its loggers (True), or leave it open
            for :meth:`finish` (False: an experiment that writes ``curves.png`` and
            ``result.json`` after ``fit``). A ``fit`` that raises ends the run either way.

    Attributes:
        client: the :class:`mlflow.tracking.MlflowClient`.
        run_id, experiment_id, tracking_uri: the run, its experiment and the store.
        status: None while the run is open, then ``FINISHED``, ``FAILED`` or ``KILLED``.

    Raises:
        delira.io.MissingDependencyError: mlflow is not installed (an ImportError whose message
            says ``pip install mlflow`` / ``pip install 'delira-training[mlflow]'``).

    Example::

        parent = MLflowLogger("runs/mlflow", "unet3d", run_name="cv", params=config)
        fold = parent.child("fold_0", artifacts_dir="runs/x/fold_0", finish_on_close=False)
        trainer = PyTorchNetworkTrainer(net, losses, save_dir="runs/x/fold_0", loggers=[fold])
        trainer.fit(train, val, epochs=10)
        ...  # write result.json
        fold.finish()
        parent.finish()
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike[str] | None = None,
        experiment_name: str = "delira",
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        artifact_location: str | None = None,
        artifacts_dir: str | os.PathLike[str] | None = None,
        artifacts: Sequence[str] = FOLD_ARTIFACTS,
        finish_on_close: bool = True,
    ) -> None:
        if not isinstance(experiment_name, str) or not experiment_name:
            raise ValueError(f"experiment_name must be a non-empty string, got {experiment_name!r}")
        if tags is not None and not isinstance(tags, Mapping):
            raise TypeError(f"tags must be a mapping {{name: value}}, got {type(tags).__name__}")
        super().__init__(artifacts_dir, artifacts, finish_on_close)
        require("mlflow", "MLflowLogger", "mlflow")
        from mlflow.tracking import MlflowClient

        self.tracking_uri, default_location = resolve_tracking_uri(tracking_uri)
        self.artifact_location = artifact_location if artifact_location is not None else default_location
        self.experiment_name = experiment_name
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.experiment_id = run.info.experiment_id
            self.client.update_run(run_id, status="RUNNING")
            for key in run.data.metrics:
                steps = {m.step for m in self.client.get_metric_history(run_id, key)}
                self._logged_steps[key] = steps
        else:
            self.experiment_id = self._experiment_id()
            run = self.client.create_run(
                self.experiment_id, tags=self._run_tags(tags, parent_run_id), run_name=run_name
            )
        self.run = run
        self.run_id: str = run.info.run_id
        self._opened()
        try:
            if run_id is not None and tags:
                self._log_batch(tags=self._run_tags(tags, parent_run_id))
            if params:
                self.log_params(params)
        except BaseException:
            self.finish("FAILED")
            raise

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return self.client.create_experiment(self.experiment_name, self.artifact_location)
            except MlflowException:  # created meanwhile by another process (parallel folds)
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise ValueError(
                f"the MLflow experiment {self.experiment_name!r} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or choose "
                f"another experiment_name"
            )
        return experiment.experiment_id

    @staticmethod
    def _run_tags(tags: Mapping[str, Any] | None, parent_run_id: str | None) -> dict[str, str]:
        out = {str(k): param_value(v) for k, v in (tags or {}).items()}
        try:  # the user, source and git tags that mlflow's own start_run adds
            from mlflow.tracking.context import registry

            out = {str(k): str(v) for k, v in registry.resolve_tags(out).items()}
        except Exception:  # an internal API: the run still gets the caller's tags
            pass
        if parent_run_id is not None:
            out["mlflow.parentRunId"] = parent_run_id
        return out

    def _log_batch(
        self, metrics: Sequence[Any] = (), params: Sequence[Any] = (), tags: Mapping[str, str] | None = None
    ) -> None:
        from mlflow.entities import RunTag

        for i in range(0, len(metrics), _METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _METRICS_PER_BATCH])
        for i in range(0, len(params), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + _PARAMS_PER_BATCH])
        items = [RunTag(k, v) for k, v in (tags or {}).items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _PARAMS_PER_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log ``params`` flattened to dotted keys (see :func:`flatten_params`), values as text
        (values longer than MLflow's 6000 characters are cut, with a warning)."""
        from mlflow.entities import Param

        self._check_open("log params")
        entries = []
        for key, value in flatten_params(params).items():
            text = param_value(value)
            if len(text) > _MAX_PARAM_LENGTH:
                warnings.warn(
                    f"MLflow param {key!r} is {len(text)} characters long; logged cut to {_MAX_PARAM_LENGTH}",
                    stacklevel=2,
                )
                text = text[:_MAX_PARAM_LENGTH]
            entries.append(Param(key, text))
        self._log_batch(params=entries)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags of the run (values as text)."""
        self._check_open("set tags")
        self._log_batch(tags={str(k): param_value(v) for k, v in tags.items()})

    def child(self, run_name: str, **kwargs: Any) -> MLflowLogger:
        """A run nested under this one, in the same store and experiment (e.g. one per fold);
        ``kwargs`` as for :class:`MLflowLogger`."""
        self._check_open("start a child run")
        kwargs.setdefault("artifact_location", self.artifact_location)
        return MLflowLogger(
            self.tracking_uri, self.experiment_name, run_name, parent_run_id=self.run_id, **kwargs
        )

    # -- the backend ----------------------------------------------------------------------------------
    def _log_values(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._log_batch(metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def _log_files(self, files: list[tuple[Path, str]]) -> None:
        for path, name in files:
            folder, _, base = name.rpartition("/")
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=name)
            elif base == path.name:
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder or None)
            else:  # mlflow keeps the local file name: log a copy under the wanted one
                with tempfile.TemporaryDirectory() as tmp:
                    copy = Path(tmp) / base
                    shutil.copyfile(path, copy)
                    self.client.log_artifact(self.run_id, str(copy), artifact_path=folder or None)

    def _end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)
