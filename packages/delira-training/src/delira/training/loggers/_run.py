"""What the experiment-tracking loggers (MLflow, Weights & Biases) share: the optional import with
an error naming the extra, parameters flattened from the nested config, the numeric metrics, the
fold's artifact files and the life of a run (close after training, finish after the fold, the
status when training raised)."""

from __future__ import annotations

import atexit
import importlib
import json
import numbers
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "EXPERIMENT_ARTIFACTS",
    "FOLD_ARTIFACTS",
    "RunLogger",
    "flatten_params",
    "param_value",
    "plain",
]

#: The files of a fold folder logged when its run finishes, relative to ``artifacts_dir`` (glob
#: patterns allowed; missing ones are skipped): the best checkpoint, the per-epoch metrics, the
#: curves, the fold's figures and its per-case figures.
FOLD_ARTIFACTS: tuple[str, ...] = (
    "checkpoints/best.safetensors",
    "metrics.csv",
    "curves.png",
    "result.json",
    "cases.csv",
)

#: The files of an experiment folder for a parent run: the resolved config, the folds, the summary.
EXPERIMENT_ARTIFACTS: tuple[str, ...] = (
    "config.yaml",
    "splits.json",
    "summary.json",
    "summary.csv",
    "postprocessing.json",
)

_STATUSES = ("FINISHED", "FAILED", "KILLED")


def require(module: str, logger: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`delira.io.MissingDependencyError` (an ImportError) that
    names the package and the extra installing it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        from delira.io import MissingDependencyError

        raise MissingDependencyError(
            f"{logger} needs {module}, which is not installed ({type(exc).__name__}: {exc}); install it "
            f"with `pip install {module}` or `pip install 'delira-training[{extra}]'`, or use the CSV / "
            f"TensorBoard loggers",
            name=module,
        ) from exc


def flatten_params(params: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """The leaves of a nested mapping under dotted keys: ``{"data": {"augmentation": {"rotation":
    15}}}`` -> ``{"data.augmentation.rotation": 15}``. Lists and other values are leaves (kept as
    they are); an empty mapping is a leaf ``{}``.

    Raises:
        TypeError: ``params`` is not a mapping.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping such as the config dict, got {type(params).__name__}; pass "
            f"e.g. {{'training': {{'lr': 0.01}}}}"
        )
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, sep, f"{name}{sep}"))
        else:
            flat[name] = dict(value) if isinstance(value, Mapping) else value
    return flat


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: mappings with text keys, lists for tuples and lists, numpy
    scalars as Python numbers, paths and other objects as text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def param_value(value: Any) -> str:
    """A parameter as text: strings as they are, everything else as JSON of :func:`plain`
    (``None`` -> ``null``, ``True`` -> ``true``, ``[1, 2]`` -> ``[1, 2]``, other objects as
    ``str``)."""
    value = plain(value)
    return value if isinstance(value, str) else json.dumps(value)


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The real-number entries of ``metrics`` as floats (bools and non-numbers are left out)."""
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def artifact_files(
    artifacts_dir: Path | None, patterns: Sequence[str], extra: Iterable[tuple[Path, str]]
) -> list[tuple[Path, str]]:
    """``(local path, name in the run)`` of every file or folder to log: those of ``patterns``
    under ``artifacts_dir`` that exist (names relative to it), then ``extra``."""
    found: list[tuple[Path, str]] = []
    if artifacts_dir is not None:
        for pattern in patterns:
            paths = sorted(artifacts_dir.glob(pattern)) if _is_pattern(pattern) else [artifacts_dir / pattern]
            found += [(p, p.relative_to(artifacts_dir).as_posix()) for p in paths if p.exists()]
    for path, name in extra:
        if not path.exists():
            raise FileNotFoundError(
                f"the artifact {str(path)!r} (added with add_artifact) no longer exists; keep the file "
                f"until the run finishes"
            )
        found.append((path, name))
    return found


def status_of(error: BaseException | None) -> str:
    """``FINISHED`` without an error, ``KILLED`` for an interrupt (Ctrl-C, SystemExit), else
    ``FAILED``."""
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"


class RunLogger:
    """The life of one tracked run, shared by :class:`MLflowLogger` and :class:`WandbLogger`.

    The trainer calls :meth:`log_metrics` once per epoch (``step`` = the 0-based epoch),
    :meth:`resume` after restoring a checkpoint and :meth:`close` when ``fit`` ends, also when it
    raised. :meth:`close` ends the run with status ``FAILED`` (``KILLED`` for Ctrl-C) when an
    exception is on its way out of ``fit``; otherwise it calls :meth:`finish` when
    ``finish_on_close`` is True, and leaves the run open for the caller's :meth:`finish` when it
    is False (the experiment: the fold's ``curves.png`` and ``result.json`` are written after
    ``fit``). :meth:`finish` logs the artifacts, then ends the run.
    """

    def __init__(
        self,
        artifacts_dir: str | os.PathLike[str] | None,
        artifacts: Sequence[str],
        finish_on_close: bool,
    ) -> None:
        if isinstance(artifacts, str):
            raise TypeError(
                f"artifacts must be a sequence of paths relative to artifacts_dir, got the string "
                f"{artifacts!r}; pass a list, e.g. [{artifacts!r}]"
            )
        self.artifacts_dir = None if artifacts_dir is None else Path(artifacts_dir)
        self.artifacts = tuple(artifacts)
        self.finish_on_close = bool(finish_on_close)
        self._extra_artifacts: list[tuple[Path, str]] = []
        self._logged_steps: dict[str, set[int]] = {}
        #: the status the run ended with (``FINISHED``, ``FAILED``, ``KILLED``), None while open
        self.status: str | None = None

    def _opened(self) -> None:
        """Called by a backend once its run exists: a run still open when the interpreter exits
        (``finish`` never called) ends ``FAILED``, without artifacts."""
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        if self.status is None:
            self.finish("FAILED")

    # -- to be supplied by the backends -------------------------------------------------------------
    def _log_values(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _log_files(self, files: list[tuple[Path, str]]) -> None:
        raise NotImplementedError

    def _end(self, status: str) -> None:
        raise NotImplementedError

    # -- the logger interface -----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True until the run has ended."""
        return self.status is None

    def _check_open(self, what: str) -> None:
        if self.status is not None:
            raise RuntimeError(
                f"cannot {what}: the run already ended ({self.status}); create a new logger for a new run"
            )

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the real-number entries of ``metrics`` at ``step`` (the trainer's 0-based epoch);
        other values (strings, bools) are skipped."""
        self._check_open("log metrics")
        values = numeric(metrics)
        if values:
            self._log_values(values, int(step))
            for key in values:
                self._logged_steps.setdefault(key, set()).add(int(step))

    def resume(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Log the epochs of ``history`` (restored from a checkpoint) this run does not hold yet, so
        that a resumed fold's run has every epoch."""
        for row in history:
            step = int(row["epoch"])
            values = {k: v for k, v in numeric(row).items() if k != "epoch"}
            missing = {k: v for k, v in values.items() if step not in self._logged_steps.get(k, set())}
            if missing:
                self.log_metrics(missing, step)

    def add_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        """Log the file or folder ``path`` as ``name`` (default: its file name) when the run
        finishes successfully, besides the ``artifacts`` found under ``artifacts_dir``."""
        self._check_open("add an artifact")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {str(path)!r} does not exist; pass an existing file or folder")
        self._extra_artifacts.append((path, name or path.name))

    def finish(self, status: str = "FINISHED") -> None:
        """End the run; with ``FINISHED`` log the artifacts first (``artifacts`` under
        ``artifacts_dir`` that exist, then those of :meth:`add_artifact`). A second call does
        nothing. If logging the artifacts fails the run ends ``FAILED`` and the error is raised."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")
        if self.status is not None:
            return
        atexit.unregister(self._at_exit)
        try:
            if status == "FINISHED":
                self._log_files(artifact_files(self.artifacts_dir, self.artifacts, self._extra_artifacts))
        except BaseException as exc:
            self.status = status_of(exc)
            self._end(self.status)
            raise
        self.status = status
        self._end(status)

    def close(self) -> None:
        """The trainer's hook at the end of ``fit`` (from its ``finally``): end the run
        ``FAILED``/``KILLED`` when an exception is propagating (``sys.exc_info()``: also one being
        handled by an ``except`` around the call), else :meth:`finish` if ``finish_on_close``
        (otherwise the run stays open for :meth:`finish`). While an exception propagates, a
        failure of the tracking backend itself is only warned about, so that the training error
        is the one raised and the trainer's other loggers still close."""
        if self.status is not None:
            return
        error = sys.exc_info()[1]
        if error is None:
            if self.finish_on_close:
                self.finish()
            return
        try:
            self.finish(status_of(error))
        except Exception as exc:
            warnings.warn(
                f"{type(self).__name__} could not end its run after the training error "
                f"{type(error).__name__}: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.finish(status_of(exc))
