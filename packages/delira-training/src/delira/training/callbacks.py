"""Callbacks: hooks the trainers call at training, epoch and iteration begin and end.

Order of calls in ``fit``: ``on_train_begin``; per epoch ``on_epoch_begin``, per training
iteration ``on_iteration_begin`` / ``on_iteration_end``, then (after validation, with the epoch's
logs) ``on_epoch_end``; finally ``on_train_end``. Callbacks run in list order; the trainer's own
checkpointing (``save_dir``) runs after the user callbacks of each epoch.
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
