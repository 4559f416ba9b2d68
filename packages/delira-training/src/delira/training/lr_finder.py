"""A learning-rate range test (Smith 2017, as fastai's and Lightning's ``lr_find``) for both trainers.

:func:`find_lr` trains ``num_iterations`` steps with the learning rate growing exponentially from
``min_lr`` to ``max_lr``, records the loss of every step, smooths it (a bias-corrected exponential
moving average, ``smoothing`` 0.98), stops early once the smoothed loss exceeds ``diverge_factor``
times its minimum, and suggests the learning rate where the smoothed loss falls fastest (the most
negative ``numpy.gradient`` of the curve after dropping ``skip_start`` points at the start and
``skip_end`` at the end, as Lightning does). Afterwards the network, optimizer (and scheduler and
grad scaler) states, the learning rate and the RNG states are exactly those from before.

Example::

    trainer = PyTorchNetworkTrainer(net, {"ce": loss}, optimizer="sgd", lr=1e-3)
    result = find_lr(trainer, train_loader, plot="lr_find.png")
    trainer.lr = result.suggestion  # then trainer.fit(...)
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LRFinderResult", "find_lr", "lr_sweep", "plot_lr_finder", "smooth_losses", "suggest_lr"]


@dataclass
class LRFinderResult:
    """What :func:`find_lr` measured.

    Attributes:
        lrs: the learning rate of each step run, ``(steps,) float64``.
        losses: the raw training loss of each step.
        smoothed: the smoothed losses (:func:`smooth_losses`).
        suggestion: the suggested learning rate (:func:`suggest_lr`), or None when too few steps ran.
        index: the step of the suggestion, or None.
        diverged: whether the sweep stopped early on a diverging (or non-finite) loss.
        plot: the PNG written, or None.
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    suggestion: float | None
    index: int | None
    diverged: bool
    plot: Path | None = field(default=None)


def lr_sweep(min_lr: float, max_lr: float, num_iterations: int) -> np.ndarray:
    """The learning rates of the sweep: ``min_lr * (max_lr / min_lr) ** (k / (num_iterations - 1))``
    for ``k = 0 .. num_iterations - 1`` (``min_lr`` first, ``max_lr`` last)."""
    k = np.arange(num_iterations, dtype=np.float64)
    return min_lr * (max_lr / min_lr) ** (k / max(num_iterations - 1, 1))


def smooth_losses(losses: Sequence[float], smoothing: float = 0.98) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses``: ``a_k = smoothing * a_{k-1} +
    (1 - smoothing) * loss_k`` (``a_{-1} = 0``), reported as ``a_k / (1 - smoothing ** (k + 1))``.
    ``smoothing`` 0 returns the losses as they are."""
    out = np.empty(len(losses), dtype=np.float64)
    average = 0.0
    for k, loss in enumerate(losses):
        average = smoothing * average + (1.0 - smoothing) * float(loss)
        out[k] = average / (1.0 - smoothing ** (k + 1)) if smoothing > 0 else float(loss)
    return out


def suggest_lr(
    lrs: Sequence[float], smoothed: Sequence[float], skip_start: int = 10, skip_end: int = 1
) -> tuple[float | None, int | None]:
    """The learning rate at the steepest descent of the smoothed loss: after dropping ``skip_start``
    points at the start and ``skip_end`` at the end (and non-finite losses), the point with the most
    negative ``numpy.gradient`` (per step; the steps are equal in ``log(lr)``).

    Returns:
        ``(lr, index into lrs)``, or ``(None, None)`` when fewer than 2 points are left.
    """
    lrs, smoothed = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    stop = len(smoothed) - skip_end if skip_end > 0 else len(smoothed)
    window = np.arange(skip_start, max(stop, skip_start))
    window = window[np.isfinite(smoothed[window])]
    if window.size < 2:
        return None, None
    index = int(window[int(np.argmin(np.gradient(smoothed[window])))])
    return float(lrs[index]), index


def plot_lr_finder(result: LRFinderResult, path: str | os.PathLike[str]) -> Path | None:
    """The loss against the learning rate (log axis) with the suggestion marked, as a PNG at
    ``path``; None when matplotlib (the ``plots`` extra) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed")
    if result.suggestion is not None and result.index is not None:
        ax.plot(
            [result.suggestion],
            [result.smoothed[result.index]],
            "o",
            color="C3",
            label=f"suggestion {result.suggestion:.2e}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    finite = result.smoothed[np.isfinite(result.smoothed)]
    if finite.size:
        low, high = float(finite.min()), float(finite[0])
        pad = 0.1 * max(high - low, 1e-12)
        ax.set_ylim(low - pad, max(high, low) + 4 * pad)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _batches(loader: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """The loader's batches, epoch after epoch (``set_epoch`` where it has it), without end."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "find_lr: the training loader yielded no batches; check the dataset and drop_last"
            )
        epoch += 1


def _check(min_lr: Any, max_lr: Any, num_iterations: Any, smoothing: Any, diverge_factor: Any) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not (number(min_lr) and number(max_lr) and 0 < min_lr < max_lr):
        raise ValueError(
            f"find_lr: need 0 < min_lr < max_lr, got min_lr={min_lr!r}, max_lr={max_lr!r} (e.g. 1e-7 and 1)"
        )
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, int) or num_iterations < 2:
        raise ValueError(f"find_lr: num_iterations must be an int >= 2 (e.g. 100), got {num_iterations!r}")
    if not (number(smoothing) and 0 <= smoothing < 1):
        raise ValueError(f"find_lr: smoothing must be in [0, 1) (e.g. 0.98), got {smoothing!r}")
    if diverge_factor is not None and not (number(diverge_factor) and diverge_factor > 1):
        raise ValueError(f"find_lr: diverge_factor must be a number > 1 or None, got {diverge_factor!r}")


def find_lr(
    trainer: Any,
    train_loader: Iterable[Mapping[str, Any]],
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_iterations: int = 100,
    *,
    smoothing: float = 0.98,
    diverge_factor: float | None = 4.0,
    skip_start: int = 10,
    skip_end: int = 1,
    plot: str | os.PathLike[str] | None = None,
) -> LRFinderResult:
    """Run the learning-rate range test on ``trainer`` (a ``PyTorchNetworkTrainer`` or
    ``TfNetworkTrainer``) and restore its state afterwards.

    Every step is one training iteration of the trainer (its losses, precision, clipping, device
    transforms; an optimizer step each time, no gradient accumulation) at the learning rate
    :func:`lr_sweep` gives it; callbacks and validation do not run. Distributed, every rank must
    call it, each trains on its share and the loss is averaged over the ranks, so all get the same
    suggestion; only rank 0 writes the plot.

    Args:
        trainer: the trainer (its network, optimizer and losses are used as they are).
        train_loader: training batches (numpy dicts, as for ``fit``); restarted when exhausted.
        min_lr, max_lr: the first and last learning rate of the sweep.
        num_iterations: the number of steps (the sweep may stop earlier on divergence).
        smoothing: of the loss curve (:func:`smooth_losses`).
        diverge_factor: stop once the smoothed loss exceeds this times its minimum so far (after
            ``skip_start`` steps), or on a non-finite loss; None: run every step (non-finite still stops).
        skip_start, skip_end: points left out of the suggestion at each end (:func:`suggest_lr`).
        plot: a PNG file for :func:`plot_lr_finder`, or None.

    Returns:
        :class:`LRFinderResult`.

    Raises:
        ValueError: invalid arguments (the message names them), or an empty loader.
    """
    _check(min_lr, max_lr, num_iterations, smoothing, diverge_factor)
    from delira.io import load_checkpoint, save_checkpoint

    trainer._setup()
    kept = set(trainer._shards)  # those of a running fit (find_lr called by a callback) stay open
    lrs = lr_sweep(float(min_lr), float(max_lr), num_iterations)
    loader = trainer._shard(train_loader, training=True) if trainer.world_size > 1 else train_loader
    losses: list[float] = []
    diverged = False
    lr_before = trainer.get_lr()
    model, optimizers = trainer._checkpoint_objects()
    with tempfile.TemporaryDirectory(prefix="delira-lr-find-") as folder:
        state = Path(folder) / "state.safetensors"
        save_checkpoint(state, model, optimizers)
        try:
            trainer._set_train_mode(True)
            batches = iter(_batches(loader))
            best = math.inf
            for step, lr in enumerate(lrs):
                trainer.set_lr(float(lr))
                values = trainer._train_step(next(batches), True, (0, step))
                loss = float(values["loss"])
                if trainer.world_size > 1:
                    loss = float(trainer._all_reduce_sum(np.array([loss]))[0]) / trainer.world_size
                losses.append(loss)
                if not math.isfinite(loss):
                    diverged = True
                    break
                current = smooth_losses(losses, smoothing)[-1]
                best = min(best, current)
                if diverge_factor is not None and step >= skip_start and current > diverge_factor * best:
                    diverged = True
                    break
        finally:
            load_checkpoint(state, model, optimizers, restore_rng=True)
            trainer.set_lr(lr_before)
            trainer._close_shards(keep=kept)
    run = lrs[: len(losses)]
    smoothed = smooth_losses(losses, smoothing)
    suggestion, index = suggest_lr(run, smoothed, skip_start, skip_end)
    if suggestion is None:
        warnings.warn(
            f"find_lr: only {len(losses)} steps ran before the loss diverged, too few for a suggestion "
            f"(skip_start={skip_start}, skip_end={skip_end}); lower max_lr or min_lr",
            RuntimeWarning,
            stacklevel=2,
        )
    result = LRFinderResult(run, np.asarray(losses, dtype=np.float64), smoothed, suggestion, index, diverged)
    if plot is not None and trainer.is_main_process:
        result.plot = plot_lr_finder(result, plot)
    return result
