"""Callbacks: hooks the trainers call at training, epoch and iteration begin and end.

Order of calls in ``fit``: ``on_train_begin``; per epoch ``on_epoch_begin``, per training
iteration ``on_iteration_begin`` / ``on_iteration_end``, then ``on_validation_begin`` /
``on_validation_end`` around the validation (also in ``trainer.evaluate``), then, with the epoch's
logs, ``on_epoch_end``; finally ``on_train_end``. ``on_checkpoint_begin`` / ``on_checkpoint_end``
wrap every checkpoint the trainer writes. Callbacks run in list order (the ``_end`` hooks of
validation and checkpoints in reverse order); the trainer's own checkpointing (``save_dir``) runs
after the user callbacks of each epoch.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Callback",
    "EarlyStopping",
    "GanSampleGrid",
    "ModelCheckpoint",
    "ModelEMA",
    "encode_png_gray8",
    "is_improvement",
    "tile_grid",
]


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

    def on_validation_begin(self, trainer: Any) -> None:
        """Called before the network is evaluated on a validation loader (``fit`` and ``evaluate``)."""

    def on_validation_end(self, trainer: Any) -> None:
        """Called after the validation (also when it raised)."""

    def on_checkpoint_begin(self, trainer: Any) -> None:
        """Called before the trainer collects the states of a checkpoint and writes it."""

    def on_checkpoint_end(self, trainer: Any) -> None:
        """Called after the checkpoint is written (also when writing raised)."""

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


class _TorchWeights:
    """The floating-point ``state_dict`` entries of a torch network (parameters and buffers), as
    live tensors that share the network's storage."""

    def __init__(self, network: Any) -> None:
        state = network.state_dict()
        self.names = [k for k, v in state.items() if v.is_floating_point()]
        self.live = [state[k] for k in self.names]

    def copy(self) -> list[Any]:
        return [t.detach().clone() for t in self.live]

    def write(self, values: list[Any]) -> None:
        import torch

        with torch.no_grad():
            for target, value in zip(self.live, values):
                target.copy_(value)

    def update(self, shadow: list[Any], decay: float) -> None:
        import torch

        with torch.no_grad():
            for average, value in zip(shadow, self.live):
                average.mul_(decay).add_(value, alpha=1.0 - decay)

    def to_numpy(self, values: list[Any]) -> list[np.ndarray]:
        return [v.detach().cpu().numpy().copy() for v in values]

    def from_numpy(self, arrays: list[Any]) -> list[Any]:
        import torch

        return [
            torch.as_tensor(np.asarray(a)).to(device=t.device, dtype=t.dtype)
            for a, t in zip(arrays, self.live)
        ]


class _KerasWeights:
    """The floating-point variables of a Keras network (``network.weights``: weights and statistics;
    integer seed states left out), named ``<index>/<variable name>`` (layer paths carry numbers that
    differ between two instances of the same network)."""

    def __init__(self, network: Any) -> None:
        self.live = [v for v in network.weights if "float" in str(v.dtype)]
        self.names = [f"{i}/{v.name}" for i, v in enumerate(self.live)]

    def copy(self) -> list[Any]:
        import tensorflow as tf

        return [tf.Variable(tf.identity(v.value), trainable=False) for v in self.live]

    def write(self, values: list[Any]) -> None:
        for target, value in zip(self.live, values):
            target.assign(value)

    def update(self, shadow: list[Any], decay: float) -> None:
        import tensorflow as tf

        for average, value in zip(shadow, self.live):
            average.assign(decay * average + (1.0 - decay) * tf.cast(value.value, average.dtype))

    def to_numpy(self, values: list[Any]) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in values]

    def from_numpy(self, arrays: list[Any]) -> list[Any]:
        import tensorflow as tf

        return [
            tf.Variable(np.asarray(a, dtype=str(t.dtype)), trainable=False) for a, t in zip(arrays, self.live)
        ]


class ModelEMA(Callback):
    """An exponential moving average of the network's weights, used for validation, saved in the
    checkpoints and left in the network after ``fit``.

    After every optimizer step (``trainer.global_step`` advanced; with gradient accumulation once
    per step) each floating-point weight and buffer is averaged: ``ema = decay * ema + (1 - decay) *
    w``, starting from the weights at the start of the first epoch (torch: the float entries of
    ``state_dict()``, e.g. BatchNorm statistics too; Keras: the float ``network.weights``; integer
    ones stay the network's). The average lives on the device, in the weights' dtype.

    - Validation (``fit``'s and ``trainer.evaluate``) runs on the averaged weights, so
      ``val_loss`` / ``val_<metric>`` and the best checkpoint follow the average.
    - Checkpoints hold the averaged weights as the model's weights (what ``best.safetensors``,
      ``Experiment`` and ``delira.training.prediction`` load) and, in this callback's state, the
      training weights and the step count; resuming from such a checkpoint puts the training
      weights back at the start of the next epoch, so the run continues exactly (also mid-epoch).
    - After ``fit`` the network holds the averaged weights; a further ``fit`` of the same trainer
      restores the training weights first.

    Works with both trainers (``trainer.framework`` ``"torch"`` or ``"keras"``); with DDP every rank
    keeps the same average.

    Args:
        decay: the weight of the old average per step, in (0, 1) (e.g. 0.999: an average over about
            1000 steps).
    """

    def __init__(self, decay: float = 0.999) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
            raise ValueError(f"ModelEMA: decay must be a number in (0, 1), e.g. 0.999; got {decay!r}")
        self.decay = float(decay)
        #: the number of averaging updates so far
        self.updates = 0
        self._shadow: list[Any] | None = None  # the average (framework tensors)
        self._held: list[Any] | None = None  # the training weights while the network holds the average
        self._pending: dict[str, Any] | None = None  # a loaded state, applied when the trainer is known
        self._last_step: int | None = None
        self._weights: Any = None
        self._swapped = {"validation": False, "checkpoint": False}
        self._trainer: Any = None

    # -- weights ----------------------------------------------------------------------------------
    def _access(self, trainer: Any, refresh: bool = False) -> Any:
        if self._weights is None or refresh or self._trainer is not trainer:
            self._trainer = trainer
            if trainer.framework == "torch":
                self._weights = _TorchWeights(trainer.network)
            elif trainer.framework == "keras":
                self._weights = _KerasWeights(trainer.network)
            else:
                raise TypeError(
                    f"ModelEMA works with the torch and Keras trainers, not {trainer.framework!r}"
                )
        return self._weights

    def averaged_weights(self) -> dict[str, np.ndarray] | None:
        """The averaged weights by name (torch ``state_dict`` keys, Keras ``<index>/<variable name>``
        of the float ``network.weights``), as numpy copies; None before the first epoch."""
        if self._shadow is None or self._weights is None:
            return None
        return dict(zip(self._weights.names, self._weights.to_numpy(self._shadow)))

    def _resolve(self, trainer: Any) -> None:
        """Apply a state loaded by :meth:`load_state_dict` (the network now holds the file's weights)."""
        self._trainer = trainer
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        access = self._access(trainer, refresh=True)
        self.updates = int(state.get("updates") or 0)
        step = state.get("last_step")
        self._last_step = None if step is None else int(step)
        names = state.get("names")
        if names is None:  # saved before the first epoch: no average yet
            self._shadow, self._held = None, None
            return
        if list(names) != access.names:
            raise ValueError(
                f"ModelEMA: the checkpoint averages {len(names)} weights ({list(names)[:3]}...) but the network "
                f"has {len(access.names)} ({access.names[:3]}...); resume with the same network"
            )
        if state.get("average") is not None:  # saved while the network held the training weights
            self._shadow, self._held = access.from_numpy(state["average"]), None
        else:  # the checkpoint's model weights are the average
            self._shadow = access.copy()
            self._held = access.from_numpy(state["training_weights"])

    def _swap_in(self, trainer: Any) -> bool:
        """Put the average into the network (keeping the training weights); True if it swapped."""
        if self._shadow is None or self._held is not None:
            return False
        access = self._access(trainer, refresh=True)
        self._held = access.copy()
        access.write(self._shadow)
        return True

    def _swap_out(self, trainer: Any) -> None:
        """Put the training weights back into the network."""
        if self._held is not None:
            self._access(trainer).write(self._held)
            self._held = None

    # -- hooks ------------------------------------------------------------------------------------
    def on_train_begin(self, trainer: Any) -> None:
        self._trainer, self._weights, self._last_step = trainer, None, None

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        self._resolve(trainer)
        self._swap_out(trainer)
        access = self._access(trainer, refresh=True)
        if self._shadow is None:
            self._shadow = access.copy()
        if self._last_step is None:
            self._last_step = int(trainer.global_step)

    def on_iteration_begin(self, trainer: Any, iteration: int) -> None:
        self._swap_out(trainer)

    def on_iteration_end(self, trainer: Any, iteration: int, logs: dict[str, float]) -> None:
        if self._shadow is None or trainer.global_step == self._last_step:
            return
        self._access(trainer).update(self._shadow, self.decay)
        self.updates += 1
        self._last_step = int(trainer.global_step)

    def on_validation_begin(self, trainer: Any) -> None:
        self._resolve(trainer)
        self._swapped["validation"] = self._swap_in(trainer)

    def on_validation_end(self, trainer: Any) -> None:
        if self._swapped["validation"]:
            self._swap_out(trainer)
            self._swapped["validation"] = False

    def on_checkpoint_begin(self, trainer: Any) -> None:
        self._resolve(trainer)
        self._swapped["checkpoint"] = self._swap_in(trainer)

    def on_checkpoint_end(self, trainer: Any) -> None:
        if self._swapped["checkpoint"]:
            self._swap_out(trainer)
            self._swapped["checkpoint"] = False

    def on_train_end(self, trainer: Any) -> None:
        self._resolve(trainer)
        self._swap_in(trainer)

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "updates", "last_step", "names", "training_weights" | "average"}``: inside a
        checkpoint (the network holding the average) the training weights, otherwise the average."""
        state: dict[str, Any] = {
            "decay": self.decay,
            "updates": self.updates,
            "last_step": self._last_step,
            "names": None,
        }
        if self._pending is not None:
            return {**self._pending, "decay": self.decay}
        if self._shadow is None or self._trainer is None:
            return state
        access = self._access(self._trainer)
        state["names"] = list(access.names)
        if self._held is not None:
            state["training_weights"] = access.to_numpy(self._held)
        else:
            state["average"] = access.to_numpy(self._shadow)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (applied at the next hook, when the trainer is known)."""
        self._pending = dict(state)
        self._shadow, self._held = None, None


class GanSampleGrid(Callback):
    """Write a grid of generated samples as an 8-bit grayscale PNG at the end of every ``every``-th
    epoch: ``folder/samples_epoch_{epoch + 1:03d}.png`` (epoch 0-based, so the first file is
    ``samples_epoch_001.png``), on the main process only, written atomically.

    The latent batch is the same every epoch (``numpy.random.default_rng(seed).standard_normal(
    (num_samples, latent_dim))`` float32, drawn without touching any global RNG, so training and a
    resume are unaffected), ``latent_dim`` read from the network (``net.latent_dim`` or
    ``net.config.latent_dim``). The generator (``net.generator`` where the network has one, else
    the network) runs in inference mode: torch in ``eval()`` under ``no_grad`` (each module's mode
    restored afterwards), Keras with ``training=False``. Of its output ``(N, C, *spatial)`` the first
    channel is drawn; 3D images ``(N, C, D, H, W)`` show their middle slice ``[:, 0, D // 2]``. The
    images are scaled together to 0..255 (``round(255 * (x - min) / (max - min))`` with the min and
    max of the whole batch; all 0 when they are equal) and tiled row by row in a near-square grid
    (``cols = ceil(sqrt(N))``, ``rows = ceil(N / cols)``) with a 2-pixel black (0) border around and
    between the images: ``(rows * (H + 2) + 2, cols * (W + 2) + 2)`` pixels.

    Args:
        folder: where the PNG files go (created).
        num_samples: images in the grid, >= 1.
        seed: seed of the fixed latent batch.
        every: write after every this many epochs (after epochs ``every - 1``, ``2 * every - 1``, ...).
    """

    border = 2

    def __init__(
        self, folder: str | os.PathLike[str], num_samples: int = 16, seed: int = 0, every: int = 1
    ) -> None:
        for name, value in (("num_samples", num_samples), ("every", every)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GanSampleGrid: {name} must be an int >= 1, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"GanSampleGrid: seed must be a non-negative int, got {seed!r}")
        self.folder = Path(folder)
        self.num_samples, self.seed, self.every = int(num_samples), int(seed), int(every)

    def path(self, epoch: int) -> Path:
        """The file written after epoch ``epoch`` (0-based): ``folder/samples_epoch_{epoch+1:03d}.png``."""
        return self.folder / f"samples_epoch_{epoch + 1:03d}.png"

    def latent(self, latent_dim: int) -> np.ndarray:
        """The fixed latent batch: ``(num_samples, latent_dim) float32`` standard normal."""
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((self.num_samples, int(latent_dim))).astype(np.float32)

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if (epoch + 1) % self.every:
            return
        main = trainer.is_main_process
        if not (main() if callable(main) else main):
            return
        images = self.generate(trainer)
        grid = tile_grid(images, self.border)
        png = encode_png_gray8(grid)
        from delira.io import atomic_write

        path = self.path(epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_bytes(png))

    def generate(self, trainer: Any) -> np.ndarray:
        """The generator's output on the fixed latent batch: ``(num_samples, C, *spatial) float32``."""
        net = trainer.network
        latent_dim = getattr(net, "latent_dim", None)
        if latent_dim is None:
            latent_dim = getattr(getattr(net, "config", None), "latent_dim", None)
        if latent_dim is None:
            raise AttributeError(
                f"GanSampleGrid needs the latent size of the network; {type(net).__name__} has neither "
                "latent_dim nor config.latent_dim; use it with a delira.models DCGAN or give the network a "
                "latent_dim attribute"
            )
        z = self.latent(int(latent_dim))
        generator = getattr(net, "generator", net)
        if trainer.framework == "torch":
            import torch

            modes = [(m, m.training) for m in generator.modules()]
            parameter = next(generator.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            generator.eval()
            try:
                with torch.no_grad():
                    out = generator(torch.from_numpy(z).to(device))
            finally:
                for module, training in modes:
                    module.training = training
            return out.detach().float().cpu().numpy()
        import tensorflow as tf

        out = generator(tf.convert_to_tensor(z), training=False)
        return np.asarray(tf.cast(out, tf.float32).numpy())


def tile_grid(images: np.ndarray, border: int = 2) -> np.ndarray:
    """A near-square grid of ``images`` as one 8-bit grayscale picture (see :class:`GanSampleGrid`).

    Args:
        images: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` (middle slice ``D // 2`` drawn) real values;
            channel 0 is drawn.
        border: pixels of black (0) border around and between the images.

    Returns:
        ``(rows * (H + border) + border, cols * (W + border) + border) uint8``, with
        ``cols = ceil(sqrt(N))`` and ``rows = ceil(N / cols)``; images row by row, scaled together
        to 0..255 over the batch's min..max.
    """
    images = np.asarray(images)
    if images.ndim not in (4, 5) or images.shape[0] < 1:
        raise ValueError(
            f"tile_grid takes images (N, C, H, W) or (N, C, D, H, W) with N >= 1; got shape {images.shape}; "
            "pass the generator's channels-first output"
        )
    planes = images[:, 0].astype(np.float64)
    if planes.ndim == 4:
        planes = planes[:, planes.shape[1] // 2]
    lo, hi = float(planes.min()), float(planes.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(
            "tile_grid: the generated images hold NaN or infinite values; the generator diverged (lower "
            "the learning rate)"
        )
    scaled = np.zeros(planes.shape, np.uint8)
    if hi > lo:
        scaled = np.round((planes - lo) / (hi - lo) * 255.0).astype(np.uint8)
    n, h, w = scaled.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + border) + border, cols * (w + border) + border), np.uint8)
    for index in range(n):
        r, c = divmod(index, cols)
        top, left = border + r * (h + border), border + c * (w + border)
        grid[top : top + h, left : left + w] = scaled[index]
    return grid


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def encode_png_gray8(image: np.ndarray) -> bytes:
    """A PNG file (bytes) of an 8-bit grayscale picture, written without an imaging library.

    Args:
        image: ``(H, W) uint8``.

    Returns:
        The PNG: signature, IHDR (bit depth 8, colour type 0, no interlace), one zlib-compressed
        IDAT of the rows (each with filter type 0), IEND.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"encode_png_gray8 takes a non-empty (H, W) uint8 picture; got shape {image.shape} "
            f"dtype {image.dtype}; convert it with tile_grid or .astype(np.uint8)"
        )
    h, w = image.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(image)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )
