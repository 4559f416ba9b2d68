"""Crops without resampling: centre, random and foreground-biased patch selection.

The patch positions are drawn on the host (the same draws for host and CUDA inputs, so a seed gives the
same crops on either); CUDA inputs are cut on the GPU by one kernel per array (``functional.crop``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from delira.augment import _arrays
from delira.augment import _validate as v
from delira.augment.functional.spatial import crop
from delira.augment.transforms.base import Transform, to_numpy


class _Crop(Transform):
    """Base of the crops: patches of ``size`` around per-sample centres (padded where they reach outside,
    unless ``pad_if_needed=False``, which makes a patch larger than the input an error)."""

    def __init__(
        self,
        size: Any,
        pad_value: float = 0.0,
        pad_value_seg: float = 0.0,
        pad_if_needed: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(1.0, **kwargs)
        self.pad_if_needed = bool(pad_if_needed)
        self.size = tuple(int(s) for s in size)
        if len(self.size) not in (2, 3) or min(self.size) < 1:
            raise ValueError(f"size={size!r} must have 2 or 3 positive entries")
        self.pad_value = v.finite(pad_value, "pad_value")
        self.pad_value_seg = v.finite(pad_value_seg, "pad_value_seg")

    def centers(self, batch, rng, n, shape) -> np.ndarray:
        raise NotImplementedError

    def apply(self, batch, rng):
        present = {
            key: batch[key]
            for key in (self.data_key, self.seg_key)
            if key is not None and batch.get(key) is not None
        }
        on_gpu = {key: _arrays.is_cuda_array(x) for key, x in present.items()}
        if len(set(on_gpu.values())) > 1:
            gpu = next(k for k, g in on_gpu.items() if g)
            cpu = next(k for k, g in on_gpu.items() if not g)
            raise ValueError(
                f"{type(self).__name__}: {gpu} is a CUDA array but {cpu} is a host array; pass both on the GPU "
                f"({cpu}.cuda() / cupy.asarray({cpu})) or both on the CPU"
            )
        if len(present) == 2 and all(on_gpu.values()):
            _arrays.check_same_device(
                {key: _arrays.CudaArray.from_array(x, key) for key, x in present.items()}
            )
        n, shape = self.batch_size(batch), self.spatial_shape(batch)
        if len(shape) != len(self.size):
            raise ValueError(
                f"crop size {self.size} has {len(self.size)} axes but the data has {len(shape)} {shape}"
            )
        if not self.pad_if_needed and any(p > s for p, s in zip(self.size, shape)):
            raise ValueError(
                f"crop size {self.size} is larger than the input {shape}; pass a smaller size or "
                "pad_if_needed=True to pad with pad_value"
            )
        centers = self.centers(batch, rng, n, shape)
        if batch.get(self.data_key) is not None:
            batch[self.data_key] = crop(batch[self.data_key], centers, self.size, self.pad_value)
        if self.has_seg(batch):
            batch[self.seg_key] = crop(batch[self.seg_key], centers, self.size, self.pad_value_seg)
        return batch


class CenterCrop(_Crop):
    """Cut a patch of ``size`` around the centre voxel (``shape // 2``), padding where it reaches outside."""

    def centers(self, batch, rng, n, shape):
        return np.repeat(np.asarray(shape, dtype=np.int64)[None] // 2, n, axis=0)


def _random_centers(rng, n, shape, size) -> np.ndarray:
    shape_a, size_a = np.asarray(shape), np.asarray(size)
    lo = size_a // 2
    hi = shape_a - (size_a - size_a // 2)  # last centre whose patch fits
    lo, hi = np.minimum(lo, shape_a // 2), np.maximum(hi, shape_a // 2)
    return rng.integers(lo, hi + 1, size=(n, len(shape)))


class RandomCrop(_Crop):
    """Cut a patch of ``size`` at a uniformly random position that keeps it inside the input."""

    def centers(self, batch, rng, n, shape):
        return _random_centers(rng, n, shape, self.size)


class ForegroundCrop(_Crop):
    """Random crops, with a fraction of the samples centred on a foreground voxel (nnU-Net's oversampling).

    Args:
        size: patch size.
        p_foreground: per-sample probability of centring on a random voxel of a random foreground
            class (nnU-Net uses 0.33). With a CUDA segmentation and no ``class_locations``, the labels of
            the samples centred on foreground are copied to the host to find their foreground voxels.
        class_locations_key: batch key of precomputed locations: a list (one per sample) of dicts
            ``{label: (K, ndim) voxel indices}``; when absent, locations come from the segmentation.
        background: label(s) not counted as foreground.
    """

    def __init__(
        self,
        size: Any,
        p_foreground: float = 0.33,
        class_locations_key: str = "class_locations",
        background: Any = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(size, **kwargs)
        self.p_foreground = v.probability(p_foreground, "p_foreground")
        self.class_locations_key = class_locations_key
        self.background = set(np.atleast_1d(background).tolist())

    def centers(self, batch, rng, n, shape):
        centers = _random_centers(rng, n, shape, self.size)
        forced = rng.random(n) < self.p_foreground
        locations = batch.get(self.class_locations_key)
        seg = None
        seg_on_gpu = False
        if locations is None and self.has_seg(batch):
            seg_on_gpu = _arrays.is_cuda_array(batch[self.seg_key])
            seg = batch[self.seg_key] if seg_on_gpu else to_numpy(batch[self.seg_key], self.seg_key)[0]
        for i in np.flatnonzero(forced):
            if locations is not None:
                per_class = {
                    k: np.asarray(val)
                    for k, val in locations[i].items()
                    if k not in self.background and len(val)
                }
            elif seg is not None:
                # CUDA seg: this sample's labels are copied to the host (only for the samples centred
                # on foreground; pass class_locations to avoid the copy)
                seg_i = _arrays.cuda_to_host(seg[i : i + 1])[0] if seg_on_gpu else seg[i]
                labels = [int(u) for u in np.unique(seg_i) if int(u) not in self.background]
                per_class = {u: np.argwhere((seg_i == u).any(axis=0)) for u in labels}
            else:
                raise KeyError(
                    f"ForegroundCrop needs {self.seg_key!r} or {self.class_locations_key!r} in the batch"
                )
            if not per_class:
                continue  # no foreground in this sample: keep the random crop
            keys = sorted(per_class)
            pts = per_class[keys[rng.integers(len(keys))]]
            centers[i] = pts[rng.integers(len(pts))]
        return centers
