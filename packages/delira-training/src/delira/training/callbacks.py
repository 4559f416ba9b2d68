"""Callbacks: hooks the trainers call at training, epoch and iteration begin and end.

Order of calls in ``fit``: ``on_train_begin``; per epoch ``on_epoch_begin``, per training
iteration ``on_iteration_begin`` / ``on_iteration_end``, then (after validation, with the epoch's
logs) ``on_epoch_end``; finally ``on_train_end``. Callbacks run in list order; the trainer's own
checkpointing (``save_dir``) runs after the user callbacks of each epoch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "is_improvement"]


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (``mode`` "min" or "max");
    NaN never improves and anything beats ``best=None``."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Callback:
    """Base class: override any hook. ``trainer`` is the running ``BaseNetworkTrainer``; ``logs``
    the epoch's history entry (``{"epoch", "train_loss", "val_loss", "val_<metric>", "lr"}``) or the
    iteration's losses (``{"loss": float, ...}``). Set ``trainer.stop_training = True`` to stop
    after the current epoch."""

    def on_train_begin(self, trainer: Any) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once after the last epoch (also after early stopping)."""

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based) trains."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        """Called after epoch ``epoch`` trained and (if due) validated."""

    def on_iteration_begin(self, trainer: Any, iteration: int) -> None:
        """Called before training iteration ``iteration`` (0-based, within the epoch)."""

    def on_iteration_end(self, trainer: Any, iteration: int, logs: dict[str, float]) -> None:
        """Called after training iteration ``iteration`` with its losses."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-like state saved in checkpoints so that a resumed run continues exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()``."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` validated epochs.

    Args:
        monitor: a history key, e.g. ``"val_loss"`` or ``"val_dice"``.
        mode: ``"min"`` or ``"max"``.
        patience: validated epochs without improvement before stopping.
        min_delta: smallest change that counts as an improvement.
    """

    def __init__(
        self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0
    ) -> None:
        is_improvement(0.0, None, mode)  # validates mode
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        if self.stopped_epoch is not None:  # a fresh fit (not a resume) starts over
            self.best, self.wait, self.stopped_epoch = None, 0, None

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            return  # not validated this epoch
        value = float(logs[self.monitor])
        if is_improvement(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.stop_training = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), int(state.get("wait", 0))


class ModelCheckpoint(Callback):
    """Save ``best.safetensors`` when ``monitor`` improves and ``last.safetensors`` every epoch, in
    the delira-io format (weights, optimizer, scheduler, RNG states, trainer state).

    Args:
        dirpath: folder of the checkpoints (created).
        monitor, mode: the metric that decides "best" (only epochs that have it are considered).
        save_best, save_last: which files to write.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        monitor: str = "val_loss",
        mode: str = "min",
        save_best: bool = True,
        save_last: bool = True,
    ) -> None:
        is_improvement(0.0, None, mode)
        self.dirpath = Path(dirpath)
        self.monitor, self.mode, self.save_best, self.save_last = monitor, mode, save_best, save_last
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def best_path(self) -> Path:
        """``dirpath/best.safetensors``."""
        return self.dirpath / "best.safetensors"

    @property
    def last_path(self) -> Path:
        """``dirpath/last.safetensors``."""
        return self.dirpath / "last.safetensors"

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if not trainer.is_main_process:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        if (
            self.save_best
            and self.monitor in logs
            and is_improvement(float(logs[self.monitor]), self.best, self.mode)
        ):
            self.best, self.best_epoch = float(logs[self.monitor]), epoch
            trainer.save_checkpoint(self.best_path, epoch + 1, logs)
        if self.save_last:
            trainer.save_checkpoint(self.last_path, epoch + 1, logs)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
