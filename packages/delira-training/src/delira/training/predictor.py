"""``Predictor``: batched inference of a trained network on whole volumes, with sliding windows
(overlap, gaussian weighting) and mirroring test-time augmentation, for PyTorch and Keras."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Predictor", "gaussian_importance_map", "window_starts"]


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of windows of length ``patch`` covering ``[0, size)`` with the given overlap
    fraction: steps of ``max(1, round(patch * (1 - overlap)))``, the last window flush with the end."""
    if size <= patch:
        return [0]
    step = max(1, round(patch * (1.0 - overlap)))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """A ``patch_size`` float32 map: a gaussian centred on the patch with sigma ``patch * sigma_scale``
    per axis, scaled to a maximum of 1 and floored at 1e-3 (so that borders still count)."""
    grids = np.meshgrid(*[np.arange(p, dtype=np.float64) for p in patch_size], indexing="ij")
    exponent = sum(((g - (p - 1) / 2.0) / max(p * sigma_scale, 1e-6)) ** 2 for g, p in zip(grids, patch_size))
    weights = np.exp(-0.5 * exponent)
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)


class Predictor:
    """Predicts whole volumes with a trained network.

    Args:
        network: a ``delira.models`` network (PyTorch module or Keras model) mapping
            ``(N, C, *patch)`` float32 to logits ``(N, K, *patch)``.
        patch_size: the spatial size of the windows, e.g. the training patch ``(D, H, W)``; None
            predicts the whole volume in one pass.
        overlap: fraction of a window shared with its neighbour on each axis, in ``[0, 1)``.
        mirror_axes: spatial axes (0-based, e.g. ``(0, 1, 2)``) to mirror for test-time
            augmentation: the logits of all ``2**len(mirror_axes)`` flipped inputs, flipped back,
            are averaged; None: no mirroring.
        batch_size: windows per forward pass.
        gaussian: weight each window's logits with :func:`gaussian_importance_map` (else uniformly).
        output: ``"probabilities"`` (softmax over the class axis of the averaged logits),
            ``"sigmoid"`` (the sigmoid of each averaged logit: region models, one output per region)
            or ``"logits"`` (the averaged logits).
        device: torch device of the inputs (default: the network's parameters' device).
    """

    def __init__(
        self,
        network: Any,
        patch_size: Sequence[int] | None = None,
        overlap: float = 0.5,
        mirror_axes: Sequence[int] | None = None,
        batch_size: int = 2,
        gaussian: bool = True,
        output: str = "probabilities",
        device: Any = None,
    ) -> None:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if output not in ("probabilities", "sigmoid", "logits"):
            raise ValueError(
                f"output must be 'probabilities' (softmax), 'sigmoid' (regions) or 'logits', got {output!r}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.network = network
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.overlap, self.batch_size, self.gaussian, self.output = (
            float(overlap),
            int(batch_size),
            gaussian,
            output,
        )
        self.mirror_axes = tuple(mirror_axes or ())
        self.device = device
        self._torch = "torch" in sys.modules and isinstance(network, sys.modules["torch"].nn.Module)

    # --- the network on a batch ------------------------------------------------------------------
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The network's main output on one batch, as numpy: no windows, no mirroring, no softmax.

        The one place a network is run on numpy input (the sliding windows, the classification
        evaluation): torch networks in evaluation mode under ``no_grad`` (their mode restored
        afterwards) on ``device`` (default the parameters' device), Keras with ``training=False``;
        ``network.main_output`` picks the full-resolution output of deep supervision.

        Args:
            batch: ``(B, C, *spatial)`` array (cast to contiguous float32).

        Returns:
            ``(B, ...)`` float32, any output rank: ``(B, K, *spatial)`` logits of a segmentation
            network, ``(B, K)`` of a classifier.
        """
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        net = self.network
        if self._torch:
            import torch

            device = self.device
            if device is None:
                param = next(net.parameters(), None)
                device = param.device if param is not None else "cpu"
            was_training = net.training
            net.eval()
            try:
                with torch.no_grad():
                    out = net(torch.from_numpy(batch).to(device))
            finally:
                net.train(was_training)
            if hasattr(net, "main_output"):
                out = net.main_output(out)
            return out.float().cpu().numpy()
        out = net(batch, training=False)
        if hasattr(net, "main_output"):
            out = net.main_output(out)
        return np.asarray(out, dtype=np.float32)

    def _forward_tta(self, batch: np.ndarray) -> np.ndarray:
        """Mean logits over every combination of the mirror axes."""
        if not self.mirror_axes:
            return self.forward(batch)
        total = None
        combos = [
            c for r in range(len(self.mirror_axes) + 1) for c in itertools.combinations(self.mirror_axes, r)
        ]
        for combo in combos:
            axes = tuple(a + 2 for a in combo)
            flipped = np.flip(batch, axes) if axes else batch
            out = self.forward(flipped)
            out = np.flip(out, axes) if axes else out
            total = out if total is None else total + out
        return total / len(combos)

    # --- whole volumes ----------------------------------------------------------------------------
    def predict(self, volume: np.ndarray) -> np.ndarray:
        """Predict one volume.

        Args:
            volume: ``(C, *spatial)`` float array (cast to float32).

        Returns:
            ``(K, *spatial)`` float32: softmax probabilities (``output="probabilities"``), sigmoids
            (``output="sigmoid"``) or logits (``output="logits"``) of the logits averaged over the
            overlapping windows (gaussian-weighted) and the mirrorings. A volume smaller than the patch on some axis is zero-padded (centred) to
            the patch and the result cropped back.
        """
        volume = np.asarray(volume, dtype=np.float32)
        spatial = volume.shape[1:]
        if self.patch_size is None:
            logits = self._forward_tta(volume[None])[0]
            return self._finish(logits)
        if len(self.patch_size) != len(spatial):
            raise ValueError(
                f"patch_size {self.patch_size} has {len(self.patch_size)} axes but the volume {volume.shape} has "
                f"{len(spatial)} spatial axes; pass a volume (C, *spatial) and a patch of the same dimensionality"
            )
        pads = [
            (max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for p, s in zip(self.patch_size, spatial)
        ]
        padded = np.pad(volume, [(0, 0), *pads]) if any(a or b for a, b in pads) else volume
        shape = padded.shape[1:]
        starts = list(
            itertools.product(*[window_starts(s, p, self.overlap) for s, p in zip(shape, self.patch_size)])
        )
        weight = (
            gaussian_importance_map(self.patch_size)
            if self.gaussian
            else np.ones(self.patch_size, np.float32)
        )
        accumulated: np.ndarray | None = None
        weights = np.zeros(shape, dtype=np.float32)
        for begin in range(0, len(starts), self.batch_size):
            group = starts[begin : begin + self.batch_size]
            slices = [tuple(slice(s, s + p) for s, p in zip(start, self.patch_size)) for start in group]
            batch = np.stack([padded[(slice(None), *sl)] for sl in slices])
            logits = self._forward_tta(batch)
            if accumulated is None:
                accumulated = np.zeros((logits.shape[1], *shape), dtype=np.float32)
            for sl, out in zip(slices, logits):
                accumulated[(slice(None), *sl)] += out * weight
                weights[sl] += weight
        logits = accumulated / weights
        crop = tuple(slice(a, a + s) for (a, _), s in zip(pads, spatial))
        return self._finish(logits[(slice(None), *crop)])

    def _finish(self, logits: np.ndarray) -> np.ndarray:
        if self.output == "logits":
            return logits.astype(np.float32)
        if self.output == "sigmoid":  # 1 / (1 + exp(-z)), from exp of -|z| (no overflow)
            z = logits.astype(np.float64)
            e = np.exp(-np.abs(z))
            return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
        shifted = logits - logits.max(axis=0, keepdims=True)
        exp = np.exp(shifted)
        return (exp / exp.sum(axis=0, keepdims=True)).astype(np.float32)
