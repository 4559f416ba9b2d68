"""A Weights & Biases logger (the ``wandb`` extra): one W&B run per training (per fold), grouped
by experiment; the config, metrics per epoch (x axis ``epoch``), the fold's files as one artifact
when the run finishes. ``offline=True`` (or ``WANDB_MODE=offline``) writes the run to
``<save_dir>/wandb/offline-run-*`` without any network; ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from delira.training.loggers._run import FOLD_ARTIFACTS, RunLogger, plain, require

__all__ = ["WandbLogger"]

_EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}  # 130: the shell's code for Ctrl-C


class WandbLogger(RunLogger):
    """Logs one run to Weights & Biases: the config, per-epoch metrics (``step`` = the 0-based
    epoch, also logged as ``epoch`` and used as the x axis of every chart) and, when the run
    finishes, the fold's files as one artifact.

    Args:
        project: the W&B project.
        name: the run's display name (e.g. ``"fold_0"``).
        params: the run's config, e.g. the whole experiment config. It stays nested (W&B shows
            ``data.augmentation.rotation`` as a column); tuples become lists, other objects text.
        group: runs of one experiment share a group (W&B's counterpart of a parent run).
        job_type: e.g. ``"fold"``.
        tags: a list of text tags.
        notes: a description of the run.
        entity: the W&B user or team (default: the logged-in user's).
        save_dir: where W&B writes the run folder (``<save_dir>/wandb/...``; default
            ``WANDB_DIR``, else the working directory).
        offline: write the run locally only (``mode="offline"``); ``wandb sync <run folder>``
            uploads it later. Default: ``WANDB_MODE`` decides.
        id: the run's id; with ``resume="allow"`` (in ``init_kwargs``) an online run continues.
        artifacts_dir: the folder whose ``artifacts`` are logged when the run finishes (the
            trainer's ``save_dir``, the fold folder).
        artifacts: paths or glob patterns relative to ``artifacts_dir`` (missing ones are
            skipped); default :data:`~delira.training.loggers.FOLD_ARTIFACTS`. They keep their
            relative paths inside the artifact.
        artifact_name: the artifact's name (default ``"<name>-<run id>"``, e.g.
            ``fold_0-1a2b3c4d``); characters W&B does not allow become ``-``.
        artifact_type: the artifact's type (default ``"model"``: it holds the best checkpoint).
        finish_on_close: end the run when the trainer closes its loggers (True), or leave it open
            for :meth:`finish` (False: an experiment that writes ``curves.png`` and
            ``result.json`` after ``fit``). A ``fit`` that raises ends the run either way
            (exit code 1, 130 for Ctrl-C).
        **init_kwargs: further arguments of ``wandb.init`` (``settings``, ``resume``, ...).

    Attributes:
        run: the ``wandb`` run; run_id: its id; run_dir: its folder (``.../offline-run-<time>-<id>``).
        status: None while the run is open, then ``FINISHED``, ``FAILED`` or ``KILLED``.

    Raises:
        delira.io.MissingDependencyError: wandb is not installed (an ImportError whose message
            says ``pip install wandb`` / ``pip install 'delira-training[wandb]'``).
    """

    def __init__(
        self,
        project: str = "delira",
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        group: str | None = None,
        job_type: str | None = None,
        tags: Sequence[str] | None = None,
        notes: str | None = None,
        entity: str | None = None,
        save_dir: str | os.PathLike[str] | None = None,
        offline: bool | None = None,
        id: str | None = None,
        artifacts_dir: str | os.PathLike[str] | None = None,
        artifacts: Sequence[str] = FOLD_ARTIFACTS,
        artifact_name: str | None = None,
        artifact_type: str = "model",
        finish_on_close: bool = True,
        **init_kwargs: Any,
    ) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping such as the config dict, got {type(params).__name__}")
        if tags is not None and (isinstance(tags, str) or not all(isinstance(t, str) for t in tags)):
            raise TypeError(f"tags must be a list of strings, e.g. ['unet', 'fold0'], got {tags!r}")
        super().__init__(artifacts_dir, artifacts, finish_on_close)
        wandb = require("wandb", "WandbLogger", "wandb")
        self._wandb = wandb
        if save_dir is not None:
            save_dir = Path(save_dir)
            save_dir.mkdir(parents=True, exist_ok=True)
            init_kwargs["dir"] = str(save_dir)
        if offline is not None:
            init_kwargs["mode"] = "offline" if offline else "online"
        init_kwargs.setdefault("reinit", "create_new")  # folds of one process are separate runs
        self.run = wandb.init(
            project=project,
            name=name,
            config=plain(dict(params or {})),
            group=group,
            job_type=job_type,
            tags=list(tags) if tags is not None else None,
            notes=notes,
            entity=entity,
            id=id,
            **init_kwargs,
        )
        self.run_id: str = self.run.id
        self.run_dir = Path(self.run.dir).parent
        self.artifact_name = re.sub(
            r"[^A-Za-z0-9_.-]", "-", artifact_name or f"{name or 'run'}-{self.run_id}"
        )
        self.artifact_type = artifact_type
        self._opened()
        try:
            self.run.define_metric("epoch")
            self.run.define_metric("*", step_metric="epoch")
        except BaseException:
            self.finish("FAILED")
            raise

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Add ``params`` (nested) to the run's config."""
        self._check_open("log params")
        self.run.config.update(plain(dict(params)), allow_val_change=True)

    def resume(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Log the epochs of ``history`` (restored from a checkpoint); a continued W&B run
        (``id`` + ``resume``) skips the steps it already has."""
        first = int(getattr(self.run, "step", 0) or 0) if getattr(self.run, "resumed", False) else 0
        super().resume([row for row in history if int(row["epoch"]) >= first])

    # -- the backend ----------------------------------------------------------------------------------
    def _log_values(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "epoch": step}, step=step)

    def _log_files(self, files: list[tuple[Path, str]]) -> None:
        if not files:
            return
        artifact = self._wandb.Artifact(self.artifact_name, type=self.artifact_type)
        for path, name in files:
            if path.is_dir():
                artifact.add_dir(str(path), name=name)
            else:
                artifact.add_file(str(path), name=name)
        self.run.log_artifact(artifact)

    def _end(self, status: str) -> None:
        self.run.finish(exit_code=_EXIT_CODES[status])
