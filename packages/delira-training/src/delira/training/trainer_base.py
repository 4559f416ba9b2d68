"""``BaseNetworkTrainer``: the framework-agnostic training loop shared by the PyTorch and
TensorFlow trainers (delira's ``NetworkTrainer``).

The loop, the callbacks, the metrics (numpy), the loggers, checkpointing and resuming live here;
a subclass supplies the framework's pieces: building the optimizer, one training step, one
evaluation step, the learning rate, and (for distributed runs) reducing numbers across processes.
"""

from __future__ import annotations

import inspect
import math
import os
import signal
import subprocess
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from delira.training.callbacks import Callback, ModelCheckpoint
from delira.training.distributed import shard_loader
from delira.training.schedules import PER_ITERATION, SCHEDULES, check_schedule_args, schedule_lr
from delira.training.seed import seed_everything

__all__ = ["INTERRUPTED_EXIT_CODE", "BaseNetworkTrainer", "NonFiniteLossError", "TrainingInterrupted"]

_PRECISIONS = ("32", "bf16", "16")
_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULERS = SCHEDULES

#: the exit status of a process whose training stopped on SIGUSR1 / SIGTERM after writing its
#: checkpoint (``EX_TEMPFAIL`` of sysexits.h: try again, i.e. resume)
INTERRUPTED_EXIT_CODE = 75


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and iteration."""


class TrainingInterrupted(SystemExit):
    """``fit`` stopped on SIGUSR1 or SIGTERM after writing ``checkpoints/last.safetensors``.

    A ``SystemExit`` with :data:`INTERRUPTED_EXIT_CODE` (75), so that an uncaught one ends the
    process with that status; ``fit(..., resume_from="last")`` continues where it stopped.

    Attributes:
        signal: the signal number that stopped training (0 on a rank that learned it from another).
        path: the checkpoint to resume from.
        requeued: whether ``scontrol requeue`` requeued the SLURM job.
    """

    def __init__(self, signum: int, path: Path, requeued: bool) -> None:
        super().__init__(INTERRUPTED_EXIT_CODE)
        self.signal, self.path, self.requeued = int(signum), Path(path), bool(requeued)

    def __str__(self) -> str:
        name = signal.Signals(self.signal).name if self.signal else "a signal on another rank"
        then = "the SLURM job was requeued" if self.requeued else f"exit status {INTERRUPTED_EXIT_CODE}"
        return f"training stopped on {name}; resume from {self.path} (resume_from='last'); {then}"


def _numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
    }


class BaseNetworkTrainer:
    """The training loop of both trainers. Use :class:`PyTorchNetworkTrainer` or
    :class:`TfNetworkTrainer`; the arguments are the same.

    Args:
        network: a ``delira.models`` network (``prepare_batch``, ``split_batch``,
            ``compute_losses``, ``training_step``).
        losses: ``{name: loss}`` in the framework's argument order; their sum is minimised.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or a framework optimizer / factory (see the
            subclass).
        lr: the (initial) learning rate.
        optimizer_kwargs: extra arguments of the named optimizer (e.g. ``{"momentum": 0.9}``).
        scheduler: None, ``"cosine"`` (cosine decay to 0 over the epochs of ``fit``), ``"step"``
            (``lr * gamma ** (epoch // step_size)``, ``scheduler_kwargs`` ``step_size`` (default a
            third of the epochs) and ``gamma`` (0.1)), ``"poly"`` (``lr * (1 - epoch / epochs) **
            exponent``, ``exponent`` 0.9: nnU-Net's), ``"onecycle"`` (``lr`` the peak; ``pct_start``,
            ``div_factor``, ``final_div_factor`` as torch's ``OneCycleLR``), or a framework scheduler
            (see the subclass); the closed forms are in :mod:`delira.training.schedules`. Named
            schedules set the learning rate at the start of each epoch, ``"onecycle"`` before every
            iteration (per epoch when the loader has no length). Warm-up:
            :class:`~delira.training.schedules.LinearWarmup` in ``callbacks``, on top of any of them.
        metrics: ``{name: fn(predictions, batch) -> float | dict}`` on numpy: predictions are the
            network's main output (e.g. logits ``(N, K, *spatial)`` float32), ``batch`` the numpy
            batch. A dict result is logged as ``val_<name>`` (its ``"mean"``) and
            ``val_<name>_<key>``. Values are averaged over the validation batches (NaN skipped).
        callbacks: a list of :class:`~delira.training.callbacks.Callback`.
        device: where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``; TensorFlow names such
            as ``"/GPU:0"`` for the Keras trainer).
        precision: ``"32"``, ``"bf16"`` or ``"16"`` (mixed precision).
        grad_accumulation: optimizer steps every this many iterations (and at the end of an epoch).
        grad_clip: clip the global gradient norm to this value, or None.
        val_every: validate every this many epochs (and after the last one).
        monitor, mode: the history key that decides the best checkpoint, ``"min"`` or ``"max"``.
        save_dir: if given, the trainer writes ``checkpoints/best.safetensors`` and
            ``checkpoints/last.safetensors`` (delira-io format), ``metrics.csv``, ``tensorboard/``
            (event files) and ``curves.png`` there (rank 0 only).
        device_transforms: delira-augment transforms (``t(**batch) -> batch``) applied to the
            prepared batch on the device, in order, during training only; a transform with an
            ``rng`` parameter gets ``numpy.random.default_rng([seed, epoch, iteration, k])``
            (``[seed, epoch, iteration, k, rank]`` when several processes train).
        seed: passed to :func:`seed_everything` at the start of ``fit``.
        verbose: show a tqdm progress bar with the loss.
        loggers: extra loggers (``log_metrics(metrics, step)``, ``close()``), e.g. an
            :class:`~delira.training.loggers.MLflowLogger`.
        scheduler_kwargs: arguments of the named schedulers (others are refused).

    Losses that have ``takes_all_outputs`` (:class:`~delira.training.losses.DeepSupervisionLoss`) get
    every output of a network that returns a list (deep supervision) and weight them themselves;
    the other losses go through the network's ``compute_losses``.

    Signals (SLURM pre-emption and time limits, ``scancel --signal``, ``kill``): with ``save_dir``
    and in the main thread, ``fit`` handles SIGUSR1 and SIGTERM (under submitit only SIGUSR1:
    submitit keeps SIGTERM and does its own checkpoint-and-requeue on SIGUSR2). After the signal it
    stops at the next iteration that took an optimizer step (or at the end of the epoch), writes
    ``checkpoints/last.safetensors`` with the position inside the epoch (rank 0; every rank agrees
    on the iteration), requeues the job with ``scontrol requeue $SLURM_JOB_ID`` when it runs in a
    SLURM batch job that submitit did not start, and raises :class:`TrainingInterrupted` (exit status
    :data:`INTERRUPTED_EXIT_CODE`). ``fit(..., resume_from="last")`` then continues inside the
    epoch: with a ``delira.data.DataLoader`` (whose batch ``i`` of epoch ``e`` depends only on the
    seed, ``e`` and ``i``) the batches already trained are skipped (read and dropped, not trained)
    and the result equals an uninterrupted run; any other loader restarts that epoch at its first
    batch with the weights of the interrupt (its first batches are trained twice). The previous
    handlers are restored when ``fit`` returns. With DDP the ranks agree on the stop (one all-reduce
    per optimizer step while ``save_dir`` is set); TensorFlow multi-worker training does not, each
    worker stops on its own signal (SLURM signals every task of a step).

    Distributed (``world_size > 1``, set up by the framework trainer): every rank trains on its
    share of each epoch (:func:`~delira.training.distributed.shard_loader`: a
    ``delira.data.DataLoader`` is rebuilt to load only this rank's samples, every rank getting the
    same number of equal batches; validation batches are divided without padding and the losses and
    metrics summed over the ranks), only rank 0 logs, writes checkpoints and ``curves.png``, a resume
    must find the same checkpoint on every rank, and ``fit`` ends with a barrier, so that every rank
    may read what rank 0 wrote once it returns. ``fit`` and ``evaluate`` must be called on every rank.
    """

    framework = "none"
    #: the framework's loss argument order: torch ``loss(predictions, targets)``, Keras the reverse
    targets_first = False

    def __init__(
        self,
        network: Any,
        losses: Mapping[str, Callable[..., Any]],
        optimizer: Any = "adam",
        lr: float = 1e-3,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        scheduler: Any = None,
        metrics: Mapping[str, Callable[..., Any]] | None = None,
        callbacks: Sequence[Callback] | None = None,
        device: str = "cpu",
        precision: str = "32",
        grad_accumulation: int = 1,
        grad_clip: float | None = None,
        val_every: int = 1,
        monitor: str = "val_loss",
        mode: str = "min",
        save_dir: str | os.PathLike[str] | None = None,
        device_transforms: Sequence[Callable[..., Any]] | None = None,
        seed: int = 0,
        verbose: bool = True,
        *,
        loggers: Sequence[Any] | None = None,
        scheduler_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(losses, Mapping) or not losses or not all(callable(f) for f in losses.values()):
            raise ValueError(
                f"losses must be a non-empty dict of callables, e.g. {{'ce': loss_fn}}; got {losses!r}"
            )
        if isinstance(optimizer, str) and optimizer.lower() not in _OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {optimizer!r}; use one of {_OPTIMIZERS} or pass an optimizer factory"
            )
        if isinstance(scheduler, str) and scheduler not in _SCHEDULERS:
            raise ValueError(
                f"unknown scheduler {scheduler!r}; use one of {_SCHEDULERS}, None or a framework scheduler"
            )
        if isinstance(scheduler, str):
            check_schedule_args(scheduler, dict(scheduler_kwargs or {}))
        if str(precision) not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        if int(grad_accumulation) < 1:
            raise ValueError(f"grad_accumulation must be >= 1, got {grad_accumulation}")
        if int(val_every) < 1:
            raise ValueError(f"val_every must be >= 1, got {val_every}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
        self.network = network
        self.losses = dict(losses)
        self.optimizer_spec, self.lr = optimizer, float(lr)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.scheduler_spec = scheduler
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        self.metrics = dict(metrics or {})
        self.callbacks = list(callbacks or [])
        self.device, self.precision = device, str(precision)
        self.grad_accumulation, self.grad_clip = int(grad_accumulation), grad_clip
        self.val_every, self.monitor, self.mode = int(val_every), monitor, mode
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.device_transforms = list(device_transforms or [])
        self._transform_takes_rng = [_takes_rng(t) for t in self.device_transforms]
        self.seed, self.verbose = int(seed), verbose
        self.extra_loggers = list(loggers or [])
        self.history: list[dict[str, float]] = []
        self.stop_training = False
        self.epoch = 0
        self.rank, self.world_size = 0, 1
        self.optimizer: Any = None
        self.scheduler: Any = None
        self._epochs = 0
        self._checkpoint_callback: ModelCheckpoint | None = None
        self._active_callbacks: list[Callback] = list(self.callbacks)
        self._shards: dict[tuple[int, bool], tuple[Any, Any]] = {}
        #: optimizer steps taken so far (saved in checkpoints; callbacks such as ModelEMA follow it)
        self.global_step = 0
        #: training iterations of the running epoch (the loader's length; None when it has none)
        self.iterations_per_epoch: int | None = None
        self._interrupt_signal: int | None = None
        self._resume_position: dict[str, Any] | None = None

    # --- to be supplied by the framework trainers -----------------------------------------------
    def _setup(self) -> None:
        """Build the optimizer (and scheduler) once; set up distribution."""
        raise NotImplementedError

    def _train_step(
        self, batch: Mapping[str, Any], step_now: bool, context: tuple[int, int]
    ) -> dict[str, float]:
        """One training iteration on a numpy batch; take an optimizer step when ``step_now``.
        Returns ``{"loss": total, <loss name>: value, ...}`` as floats."""
        raise NotImplementedError

    def _eval_step(self, batch: Mapping[str, Any]) -> tuple[float, np.ndarray]:
        """The total loss and the numpy main output of the network on a numpy batch, in eval mode."""
        raise NotImplementedError

    def _set_train_mode(self, training: bool) -> None:
        """Switch the network between training and evaluation mode."""

    def get_lr(self) -> float:
        """The current learning rate of the optimizer."""
        raise NotImplementedError

    def set_lr(self, value: float) -> None:
        """Set the learning rate of the optimizer."""
        raise NotImplementedError

    def _epoch_end_schedule(self) -> None:
        """Advance a framework scheduler at the end of an epoch (named schedules need nothing)."""

    def _checkpoint_objects(self) -> tuple[Any, Any]:
        """``(model, optimizers)`` for delira-io's ``save_checkpoint`` / ``load_checkpoint``."""
        raise NotImplementedError

    def _compute_losses(self, predictions: Any, targets: Any) -> dict[str, Any]:
        """``network.compute_losses``, with an error naming the shapes when a loss fails."""
        try:
            whole = {n: f for n, f in self.losses.items() if getattr(f, "takes_all_outputs", False)}
            if not whole or not isinstance(predictions, (list, tuple)):
                return self.network.compute_losses(predictions, targets, self.losses)
            # deep supervision: these losses weight the outputs themselves (nnU-Net's weights)
            rest = {n: f for n, f in self.losses.items() if n not in whole}
            values = dict(self.network.compute_losses(predictions, targets, rest)) if rest else {}
            for name, fn in whole.items():
                values[name] = fn(targets, predictions) if self.targets_first else fn(predictions, targets)
            return {name: values[name] for name in self.losses}
        except Exception as exc:
            main = self.network.main_output(predictions)
            raise ValueError(
                f"computing the losses {sorted(self.losses)} failed on predictions of shape "
                f"{tuple(main.shape)} and targets of shape {tuple(getattr(targets, 'shape', ()))} ({exc}); "
                f"check that the network's outputs fit the labels (e.g. logits (N, num_classes, *spatial) "
                f"for seg (N, 1, *spatial), logits (N, num_classes) for label (N,))"
            ) from exc

    def _all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``values`` (float64 ``(K,)``) over the processes."""
        return values

    # --- public API -----------------------------------------------------------------------------
    @property
    def is_main_process(self) -> bool:
        """True on rank 0 (the process that logs and saves checkpoints)."""
        return self.rank == 0

    def fit(
        self,
        train_loader: Iterable[Mapping[str, Any]],
        val_loader: Iterable[Mapping[str, Any]] | None = None,
        epochs: int = 10,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> list[dict[str, float]]:
        """Train for ``epochs`` epochs (in total, counting those of a resumed checkpoint).

        Args:
            train_loader: an iterable of numpy batch dicts, e.g. ``{"data": (N, C, *spatial)
                float32, "seg": (N, 1, *spatial) int}``; ``set_epoch(e)`` is called each epoch
                where the loader has it.
            val_loader: the same for validation, or None.
            epochs: the total number of epochs.
            resume_from: a checkpoint written by this trainer, or ``"last"`` for
                ``save_dir/checkpoints/last.safetensors`` when it exists (else a fresh start).
                Training continues exactly where the checkpoint left it (same weights, optimizer,
                scheduler, RNG states and callback states; inside the epoch for a checkpoint
                written on a signal, see the class docstring).

        Returns:
            The history: one dict per epoch, ``{"epoch": int (0-based), "train_loss": float,
            "lr": float}`` (``lr``: the rate of the epoch's first iteration) plus, on validated
            epochs, ``"val_loss"`` and ``"val_<metric>"``.

        Raises:
            TrainingInterrupted: SIGUSR1 or SIGTERM arrived (see the class docstring); the
                checkpoint is written.
        """
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self._epochs = int(epochs)
        seed_everything(self.seed, frameworks=(self._seed_framework,))
        self._setup()
        callbacks = list(self.callbacks)
        if self.save_dir is not None:
            self._checkpoint_callback = ModelCheckpoint(
                self.save_dir / "checkpoints", self.monitor, self.mode
            )
            callbacks.append(self._checkpoint_callback)
        self._active_callbacks = callbacks
        self.history, start = [], 0
        path = self._resolve_resume(resume_from)
        self.stop_training = False
        self.global_step, self._resume_position, self._interrupt_signal = 0, None, None
        loggers = self._make_loggers()
        handlers = self._install_signal_handlers()
        try:
            for cb in callbacks:
                cb.on_train_begin(self)
            if path is not None:
                start = self.load_checkpoint(path)
                for logger in loggers:  # e.g. the CSV keeps the rows of the epochs before the resume
                    if hasattr(logger, "resume"):
                        logger.resume(self.history)
            position = self._resume_position
            inside = int(position["iteration"]) if position is not None else 0
            if not self._same_on_all_ranks([start, inside]):
                raise RuntimeError(
                    f"rank {self.rank} resumes after epoch {start} (iteration {inside}) but another rank "
                    f"does not; every rank must see the same checkpoint ({path or 'none found'}): keep "
                    "save_dir on a file system that every node shares"
                )
            for epoch in range(start, self._epochs):
                self.epoch = epoch
                logs = self._run_epoch(
                    train_loader, val_loader, epoch, callbacks, position if epoch == start else None
                )
                for logger in loggers:
                    logger.log_metrics({k: v for k, v in logs.items() if k != "epoch"}, epoch)
                if self._interrupted():  # last.safetensors of this epoch is written already
                    self._stop_on_signal(epoch + 1, None)
                if self.stop_training:
                    break
            for cb in callbacks:
                cb.on_train_end(self)
        finally:
            self._restore_signal_handlers(handlers)
            for logger in loggers:
                logger.close()
            self._close_shards()
        if self.save_dir is not None and self.is_main_process:
            from delira.training.loggers.curves import plot_curves

            plot_curves(self.history, self.save_dir / "curves.png")
        self._barrier()  # the other ranks may read rank 0's checkpoints once fit returns
        return self.history

    def evaluate(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """The mean loss and metrics over ``loader``: ``{"loss": float, "<metric>": float,
        "<metric>_<key>": float, ...}`` (the network in evaluation mode, no gradients)."""
        self._setup()
        kept = set(self._shards)  # those of a running fit (evaluate called by a callback) stay open
        try:
            results = self._validate(loader)
        finally:
            self._close_shards(keep=kept)
        return {k[4:]: v for k, v in results.items()}

    def save_checkpoint(
        self,
        path: str | os.PathLike[str],
        epoch: int,
        logs: Mapping[str, Any] | None = None,
        *,
        position: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save the training state after ``epoch`` finished epochs to ``path`` (delira-io format):
        weights, optimizer / scheduler / grad-scaler states, RNG states, the history, the optimizer
        step count and callback states. Callbacks get ``on_checkpoint_begin`` / ``_end`` around it
        (:class:`~delira.training.callbacks.ModelEMA` puts its averaged weights in the file).

        Args:
            position: inside epoch ``epoch`` (0-based), where training stopped: ``{"iteration":
                batches trained, "loss_sum", "loss_count", "lr"}`` (written on a signal), or None.
        """
        from delira.io import save_checkpoint

        callbacks = list(self._active_callbacks)
        for cb in callbacks:
            cb.on_checkpoint_begin(self)
        try:
            model, optimizers = self._checkpoint_objects()
            states = {key: cb.state_dict() for key, cb in _callback_keys(callbacks)}
            trainer = {"framework": self.framework, "global_step": int(self.global_step)}
            if position is not None:
                trainer["position"] = {"epoch": int(epoch), **dict(position)}
            extra = {"history": self.history, "callbacks": states, "trainer": trainer}
            return save_checkpoint(
                path, model, optimizers, epoch=epoch, metrics=_numbers(logs or {}), extra=extra
            )
        finally:
            for cb in reversed(callbacks):
                cb.on_checkpoint_end(self)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> int:
        """Restore a checkpoint written by :meth:`save_checkpoint`; returns its epoch count (a
        checkpoint written inside an epoch also sets where ``fit`` continues in it)."""
        from delira.io import load_checkpoint

        self._setup()
        model, optimizers = self._checkpoint_objects()
        info = load_checkpoint(path, model, optimizers)
        extra = info.extra or {}
        self.history = [dict(h) for h in extra.get("history", [])]
        trainer = dict(extra.get("trainer") or {})
        self.global_step = int(trainer.get("global_step", 0))
        position = trainer.get("position")
        self._resume_position = dict(position) if position else None
        states = extra.get("callbacks", {})
        for key, cb in _callback_keys(getattr(self, "_active_callbacks", [])):
            if key in states:
                cb.load_state_dict(dict(states[key]))
        return int(info.epoch or 0)

    # --- the loop --------------------------------------------------------------------------------
    @property
    def _seed_framework(self) -> str:
        return "torch" if self.framework == "torch" else "tensorflow"

    def _resolve_resume(self, resume_from: Any) -> Path | None:
        if resume_from is None:
            return None
        if resume_from == "last":
            if self.save_dir is None:
                raise ValueError("resume_from='last' needs save_dir; pass save_dir or a checkpoint path")
            path = self.save_dir / "checkpoints" / "last.safetensors"
            return path if path.exists() else None
        path = Path(resume_from)
        if not path.exists():
            raise FileNotFoundError(
                f"resume_from={str(path)!r} does not exist; pass a checkpoint file, 'last' or None"
            )
        return path

    def _make_loggers(self) -> list[Any]:
        if not self.is_main_process:
            return []
        loggers = list(self.extra_loggers)
        if self.save_dir is not None:
            from delira.training.loggers import CSVLogger, TensorBoardLogger

            loggers = [
                CSVLogger(self.save_dir / "metrics.csv"),
                TensorBoardLogger(self.save_dir / "tensorboard"),
                *loggers,
            ]
        return loggers

    def _named_lr(self, epoch: int, iteration: int = 0, iterations: int | None = None) -> float:
        """The named schedule's learning rate (:func:`delira.training.schedules.schedule_lr`)."""
        return schedule_lr(
            self.scheduler_spec,
            self.lr,
            epoch,
            self._epochs,
            iteration,
            iterations or 1,
            **self.scheduler_kwargs,
        )

    def _prepare_transforms(self, batch: dict[str, Any], context: tuple[int, int]) -> dict[str, Any]:
        """Apply the device transforms to a prepared batch (training only)."""
        rank = [self.rank] if self.world_size > 1 else []  # the ranks' batches draw differently
        for k, (transform, takes_rng) in enumerate(zip(self.device_transforms, self._transform_takes_rng)):
            if takes_rng:
                rng = np.random.default_rng([self.seed, context[0], context[1], k, *rank])
                batch = dict(transform(rng=rng, **batch))
            else:
                batch = dict(transform(**batch))
        return batch

    def _progress(self, loader: Any, epoch: int) -> Any:
        if not (self.verbose and self.is_main_process):
            return None
        from tqdm.auto import tqdm

        try:
            total = len(loader)
        except TypeError:  # an unsized iterable (or a rank's view of one)
            total = None
        return tqdm(total=total, desc=f"epoch {epoch + 1}/{self._epochs}", leave=False, mininterval=0.5)

    def _run_epoch(
        self,
        train_loader: Any,
        val_loader: Any,
        epoch: int,
        callbacks: list[Callback],
        position: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        batches = train_loader
        if self.world_size > 1:
            batches = self._shard(train_loader, training=True)
            if hasattr(batches, "set_epoch"):
                batches.set_epoch(epoch)
        n = self.iterations_per_epoch = _length(batches)
        named = isinstance(self.scheduler_spec, str)
        per_iteration = named and self.scheduler_spec in PER_ITERATION and n is not None
        if named:
            self.set_lr(self._named_lr(epoch, 0, n))
        for cb in callbacks:
            cb.on_epoch_begin(self, epoch)
        start, total, count, lr = 0, 0.0, 0.0, None
        if position is not None and _resumes_inside_epoch(train_loader):
            start, lr = int(position["iteration"]), position.get("lr")
            total, count = float(position["loss_sum"]), float(position["loss_count"])
        self._set_train_mode(True)
        bar = self._progress(batches, epoch)
        if bar is not None and start:
            bar.update(start)
        iterator = iter(batches)
        for _ in range(start):  # resuming inside the epoch: the batches trained before the signal
            if next(iterator, None) is None:
                raise ValueError(
                    f"resuming epoch {epoch} (0-based) after iteration {start}, but the training loader "
                    f"yields fewer batches; resume with the loader (dataset, batch size, seed) of the "
                    "interrupted run"
                )
        pending = next(iterator, None)
        if pending is None and start == 0:
            raise ValueError(
                f"the training loader yielded no batches in epoch {epoch}; check the dataset and drop_last"
            )
        i = start
        while pending is not None:
            batch, pending = pending, next(iterator, None)
            if per_iteration:
                self.set_lr(self._named_lr(epoch, i, n))
            for cb in callbacks:
                cb.on_iteration_begin(self, i)
            if lr is None:
                lr = self.get_lr()
            step_now = (i + 1) % self.grad_accumulation == 0 or pending is None
            values = self._train_step(batch, step_now, (epoch, i))
            loss = values["loss"]
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"the training loss is {loss} in epoch {epoch} (0-based), iteration {i}; lower the "
                    f"learning rate, set grad_clip, check the inputs for NaN or use precision='32'"
                )
            total, count = total + loss, count + 1
            if step_now:
                self.global_step += 1
            for cb in callbacks:
                cb.on_iteration_end(self, i, values)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            i += 1
            if step_now and self._interrupted():
                if bar is not None:
                    bar.close()
                # every rank resumes with the mean of the ranks' partial sums; their sum is the total
                partial = self._all_reduce_sum(np.array([total, count], dtype=np.float64)) / self.world_size
                where = {"iteration": i, "loss_sum": float(partial[0]), "loss_count": float(partial[1])}
                self._stop_on_signal(epoch, {**where, "lr": float(lr)})
        sums = self._all_reduce_sum(np.array([total, count], dtype=np.float64))
        logs: dict[str, float] = {"epoch": epoch, "train_loss": float(sums[0] / sums[1]), "lr": float(lr)}
        if val_loader is not None and ((epoch + 1) % self.val_every == 0 or epoch + 1 == self._epochs):
            logs.update(self._validate(val_loader))
        if bar is not None:
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k != "epoch"})
            bar.close()
        self.history.append(logs)
        self._epoch_end_schedule()
        for cb in callbacks:
            cb.on_epoch_end(self, epoch, logs)
        return logs

    def _validate(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Mean loss and metrics over ``loader``, keys prefixed with ``val_`` (callbacks get
        ``on_validation_begin`` / ``_end`` around it)."""
        callbacks = list(self._active_callbacks)
        for cb in callbacks:
            cb.on_validation_begin(self)
        try:
            return self._validate_batches(loader)
        finally:
            for cb in reversed(callbacks):
                cb.on_validation_end(self)

    def _validate_batches(self, loader: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        self._set_train_mode(False)
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}

        def add(key: str, value: float, counted: bool) -> None:
            if counted and not math.isnan(value):
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0.0) + 1.0
            else:
                sums.setdefault(key, 0.0)
                counts.setdefault(key, 0.0)

        def evaluate(batch: Mapping[str, Any], counted: bool = True) -> None:
            loss, predictions = self._eval_step(batch)
            add("val_loss", float(loss), counted)
            for name, fn in self.metrics.items():
                value = fn(predictions, batch)
                if isinstance(value, Mapping):
                    for key, v in value.items():
                        add(f"val_{name}" if key == "mean" else f"val_{name}_{key}", float(v), counted)
                else:
                    add(f"val_{name}", float(value), counted)

        if hasattr(loader, "set_epoch"):
            loader.set_epoch(0)
        batches = self._shard(loader, training=False) if self.world_size > 1 else loader
        seen = 0
        for batch in batches:
            evaluate(batch)
            seen += 1
        if self.world_size > 1 and not seen:
            # fewer validation batches than ranks: this rank evaluates the first one without counting
            # it, only to learn the metric names that the sum over the ranks needs
            first = _first_batch(loader)
            if first is not None:
                evaluate(first, counted=False)
        self._set_train_mode(True)
        keys = sorted(sums)
        digest = zlib.crc32("\0".join(keys).encode()) & 0xFFFFF
        if not self._same_on_all_ranks([len(keys), digest]):
            raise ValueError(
                f"the ranks computed different validation metrics (rank {self.rank}: {keys}); metrics must "
                "return the same keys for every batch, and the validation loader must not be empty"
            )
        reduced = self._all_reduce_sum(
            np.array([sums[k] for k in keys] + [counts[k] for k in keys] + [seen], dtype=np.float64)
        )
        if reduced[-1] == 0:
            raise ValueError(
                "the validation loader yielded no batches; pass a non-empty loader or val_loader=None"
            )
        return {
            k: float(reduced[j] / reduced[len(keys) + j]) if reduced[len(keys) + j] > 0 else float("nan")
            for j, k in enumerate(keys)
        }

    # --- distribution ------------------------------------------------------------------------------
    def _shard(self, loader: Any, training: bool) -> Any:
        """This rank's share of ``loader`` (:func:`shard_loader`), built once per ``fit``."""
        key = (id(loader), training)
        if key not in self._shards:
            self._shards[key] = (loader, shard_loader(loader, self.rank, self.world_size, training))
        return self._shards[key][1]

    def _close_shards(self, keep: Container[tuple[int, bool]] = ()) -> None:
        """Stop the workers of the sharded copies of the loaders (the originals are the caller's),
        except those in ``keep``."""
        for key in [k for k in self._shards if k not in keep]:
            loader, shard = self._shards.pop(key)
            if shard is not loader and hasattr(shard, "close"):
                shard.close()

    def _same_on_all_ranks(self, values: Sequence[float]) -> bool:
        """True when every rank holds the same ``values`` (small integers): with the sums ``s`` of
        ``x`` and ``q`` of ``x ** 2`` over the ``W`` ranks, ``s ** 2 == W * q`` exactly when all are
        equal. Every rank gets the same answer (one all-reduce)."""
        if self.world_size <= 1:
            return True
        x = np.asarray(values, dtype=np.float64)
        reduced = self._all_reduce_sum(np.concatenate([x, x * x]))
        return bool(np.array_equal(reduced[: x.size] ** 2, self.world_size * reduced[x.size :]))

    def _barrier(self) -> None:
        """Wait until every rank got here (an all-reduce)."""
        if self.world_size > 1:
            self._all_reduce_sum(np.zeros(1, dtype=np.float64))

    # --- signals: checkpoint and requeue on SLURM pre-emption / time limits -------------------------
    @property
    def interrupt_signal(self) -> int | None:
        """The signal (SIGUSR1 / SIGTERM) that asked the running ``fit`` to stop, or None."""
        return self._interrupt_signal

    def _install_signal_handlers(self) -> dict[int, Any]:
        """Handle SIGUSR1 and SIGTERM (not SIGTERM under submitit) while ``fit`` runs, with
        ``save_dir``, in the main thread; returns the previous handlers."""
        if self.save_dir is None or threading.current_thread() is not threading.main_thread():
            return {}
        wanted = [getattr(signal, "SIGUSR1", None), None if _under_submitit() else signal.SIGTERM]
        previous: dict[int, Any] = {}
        for signum in wanted:
            if signum is not None:
                try:
                    previous[signum] = signal.signal(signum, self._on_signal)
                except (ValueError, OSError):  # not the main interpreter, or not supported here
                    continue
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: Mapping[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._interrupt_signal is None:
            self._interrupt_signal = int(signum)

    def _interrupted(self) -> bool:
        """Whether a signal asked to stop (on any rank: one all-reduce per call when distributed)."""
        if self.save_dir is None:
            return False
        flag = self._interrupt_signal is not None
        if self.world_size > 1:
            flag = bool(self._all_reduce_sum(np.array([1.0 if flag else 0.0], dtype=np.float64))[0] > 0)
        return flag

    def _stop_on_signal(self, epoch: int, position: Mapping[str, Any] | None) -> None:
        """Write ``last.safetensors`` (inside epoch ``epoch`` at ``position``; None: the epoch's own
        checkpoint is written already), requeue the SLURM job, raise :class:`TrainingInterrupted`."""
        assert self.save_dir is not None
        path = self.save_dir / "checkpoints" / "last.safetensors"
        if position is not None and self.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.save_checkpoint(path, epoch, position=position)
        self._barrier()
        requeued = _requeue_slurm_job() if self.is_main_process else False
        error = TrainingInterrupted(self._interrupt_signal or 0, path, requeued)
        if self.is_main_process:
            print(f"delira: {error}", file=sys.stderr, flush=True)
        raise error


def _length(loader: Any) -> int | None:
    """``len(loader)``, or None for an unsized iterable."""
    try:
        return len(loader)
    except TypeError:
        return None


def _resumes_inside_epoch(loader: Any) -> bool:
    """Whether ``fit`` can continue inside an epoch of ``loader`` by skipping the batches already
    trained: a ``delira.data.DataLoader``, whose batch ``i`` of epoch ``e`` depends only on its seed,
    ``e`` and ``i`` (the skipped batches are read and dropped; it has no way to start at an index)."""
    from delira.data import DataLoader

    return isinstance(loader, DataLoader)


def _under_submitit(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a submitit job (submitit handles SIGTERM and requeues on SIGUSR2)."""
    env = os.environ if environ is None else environ
    return "SUBMITIT_EXECUTOR" in env or "SUBMITIT_FOLDER" in env


def slurm_requeue_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The SLURM job to requeue after a signal: ``SLURM_JOB_ID`` (``<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>``
    for an array task) of a batch job, or None outside SLURM, under submitit and in an interactive
    ``salloc`` shell (``SLURM_JOB_NAME`` ``bash`` / ``interactive``)."""
    from delira.training.distributed import INTERACTIVE_JOB_NAMES

    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    if not job or _under_submitit(env) or env.get("SLURM_JOB_NAME", "") in INTERACTIVE_JOB_NAMES:
        return None
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else str(job)


def _requeue_slurm_job() -> bool:
    """``scontrol requeue <job>`` (:func:`slurm_requeue_id`); True when it succeeded."""
    job = slurm_requeue_id()
    if job is None:
        return False
    try:
        done = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        warnings.warn(
            f"could not requeue SLURM job {job} ({exc}); resubmit it to resume", RuntimeWarning, stacklevel=3
        )
        return False
    if done.returncode != 0:
        warnings.warn(
            f"scontrol requeue {job} failed (exit status {done.returncode}: {done.stderr.strip()}); resubmit the "
            "job to resume (is it submitted with --requeue?)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def _first_batch(loader: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first batch of ``loader`` (``load(0)`` of a ``delira.data.DataLoader``), or None."""
    if hasattr(loader, "load") and hasattr(loader, "batch_keys"):
        return loader.load(0)
    return next(iter(loader), None)


def _callback_keys(callbacks: Sequence[Callback]) -> list[tuple[str, Callback]]:
    """``("ClassName:k", callback)``: the k-th callback of its class, so that states match on resume
    even when callbacks of other classes were added or removed."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        name = type(cb).__name__
        keys.append((f"{name}:{seen.get(name, 0)}", cb))
        seen[name] = seen.get(name, 0) + 1
    return keys


def _takes_rng(transform: Callable[..., Any]) -> bool:
    try:
        return "rng" in inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False
