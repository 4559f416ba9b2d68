"""Patch extraction: fixed-size crops of whole-case samples, random or centred on foreground.

:class:`PatchDataset` turns :class:`~delira.data.samplers.PatchKey` keys (from
:class:`~delira.data.samplers.ForegroundOversamplingSampler`) into patches. Foreground patches
are centred on a voxel drawn from the case's ``class_locations`` (computed by
:mod:`delira.data.preprocessing`, or from the segmentation on the fly when missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from delira.data.datasets import Dataset, case_ids_of
from delira.data.samplers import PatchKey

__all__ = ["PatchDataset", "class_locations", "crop_patch"]


def class_locations(
    seg: np.ndarray,
    classes: Sequence[int] | None = None,
    max_per_class: int = 10000,
    seed: int = 0,
    ignore_label: int | None = None,
) -> dict[int, np.ndarray]:
    """Voxel coordinates of each foreground class, subsampled to at most ``max_per_class``.

    Args:
        seg: ``(1, *spatial)`` integer segmentation (the sample convention).
        classes: the classes to locate (default: every value > 0 present in ``seg`` other than
            ``ignore_label``).
        max_per_class: keep at most this many coordinates per class (chosen at random with ``seed``).
        seed: seeds the subsampling.
        ignore_label: the label of unannotated voxels (``data.ignore_label``): not a foreground
            class, left out of the default ``classes``.

    Returns:
        ``{class: (K, ndim) int64 array}`` of spatial coordinates; ``K`` is 0 for an absent class.
    """
    seg = np.asarray(seg)
    if seg.ndim < 2 or seg.shape[0] != 1:
        raise ValueError(
            f"seg has shape {seg.shape}; expected (1, *spatial) (one channel first), e.g. seg[None]"
        )
    seg = seg[0]
    ignore = _ignore_label(ignore_label)
    if classes is None:
        classes = [int(c) for c in np.unique(seg) if c > 0 and c != ignore]
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    for c in classes:
        coords = np.argwhere(seg == c)
        if len(coords) > max_per_class:
            coords = coords[np.sort(rng.choice(len(coords), size=max_per_class, replace=False))]
        out[int(c)] = coords.astype(np.int64)
    return out


def _ignore_label(value: Any) -> int | None:
    """``value`` checked: None or an int (a label value)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"ignore_label={value!r} must be an int (the label of unannotated voxels) or None")
    return int(value)


def crop_patch(
    array: np.ndarray, lower: Sequence[int], patch_size: Sequence[int], pad_value: float = 0
) -> np.ndarray:
    """The window ``[lower, lower + patch_size)`` of the spatial axes of ``(C, *spatial)`` ``array``.

    Parts of the window outside the array are filled with ``pad_value``.

    Returns:
        ``(C, *patch_size)`` array of ``array.dtype`` (always a new array).
    """
    ndim = len(patch_size)
    spatial = array.shape[1:]
    if len(spatial) != ndim:
        raise ValueError(
            f"array has shape {array.shape} (C + {len(spatial)} spatial axes) but patch_size "
            f"{tuple(patch_size)} has {ndim} axes; give one patch size per spatial axis"
        )
    out = np.full((array.shape[0], *patch_size), pad_value, dtype=array.dtype)
    src, dst = [], []
    for lo, p, n in zip(lower, patch_size, spatial):
        a, b = max(lo, 0), min(lo + p, n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[(slice(None), *dst)] = array[(slice(None), *src)]
    return out


class PatchDataset:
    """Patches of ``patch_size`` voxels cut from the samples of ``dataset``.

    Args:
        dataset: whole-case samples with ``"data"`` ``(C, *spatial)`` (and ``"seg"``
            ``(1, *spatial)`` for foreground patches).
        patch_size: spatial size of a patch, one int per spatial axis.
        pad_value: fill value for ``data`` where a patch reaches beyond the image (``seg`` is filled
            with 0).
        locations_key: sample key holding ``{class: (K, ndim) coords}`` (see
            :func:`class_locations`); computed from ``seg`` when the sample does not have it.
        ignore_label: the label of unannotated voxels (``data.ignore_label``): never a foreground
            class, even where the locations (e.g. cached by :mod:`delira.data.preprocessing`, which
            locates every label > 0) list it; a case whose only labels are background and the
            ignore label gets a random patch.

    Keys: a :class:`~delira.data.samplers.PatchKey` ``(index, foreground, seed)``, or a plain int
    ``i`` (a random patch seeded with ``i``). A random patch has its lower corner uniform over the
    positions that keep it inside the image (centred when the image is smaller). A foreground patch
    contains a voxel drawn uniformly from the locations of a uniformly drawn class present in the
    case, placed as close to the patch centre as the image borders allow; a case without
    foreground gets a random patch.

    Returns samples with ``"data"`` ``(C, *patch_size)``, ``"seg"`` ``(1, *patch_size)`` (when
    present), ``"patch_lower"`` (tuple of ints) and the other non-array metadata of the case.
    """

    def __init__(
        self,
        dataset: Dataset,
        patch_size: Sequence[int],
        pad_value: float = 0.0,
        locations_key: str = "class_locations",
        ignore_label: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.patch_size = tuple(int(p) for p in patch_size)
        if not self.patch_size or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be positive ints, got {tuple(patch_size)}")
        self.pad_value = pad_value
        self.locations_key = locations_key
        self.ignore_label = _ignore_label(ignore_label)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def case_ids(self) -> list[str]:
        """The case ids of the wrapped dataset."""
        return case_ids_of(self.dataset)

    def _lower_corner(self, sample: Mapping[str, Any], key: PatchKey, spatial: tuple[int, ...]) -> list[int]:
        rng = np.random.default_rng(key.seed)
        ndim = len(spatial)
        if key.foreground:
            locations = sample.get(self.locations_key)
            if locations is None and "seg" in sample:
                locations = class_locations(sample["seg"], ignore_label=self.ignore_label)
            present = [
                c
                for c, coords in sorted((locations or {}).items())
                if len(coords) and (self.ignore_label is None or int(c) != self.ignore_label)
            ]
            if present:
                cls = present[int(rng.integers(len(present)))]
                coords = np.asarray(locations[cls])
                voxel = coords[int(rng.integers(len(coords)))]
                lower = []
                for d in range(ndim):
                    p, n = self.patch_size[d], spatial[d]
                    lo = int(voxel[d]) - p // 2
                    # Keep the patch inside the image where possible, the voxel always inside.
                    lo = min(max(lo, 0), max(n - p, 0)) if n >= p else min(max(lo, n - p), 0)
                    lower.append(lo)
                return lower
        lower = []
        for d in range(ndim):
            p, n = self.patch_size[d], spatial[d]
            lower.append(int(rng.integers(0, n - p + 1)) if n >= p else -((p - n) // 2))
        return lower

    def __getitem__(self, key: Any) -> dict[str, Any]:
        if not isinstance(key, PatchKey):
            if isinstance(key, tuple) and len(key) == 3:
                key = PatchKey(*key)
            else:
                key = PatchKey(int(key), False, int(key))
        sample = self.dataset[key.index]
        data = np.asarray(sample["data"])
        spatial = tuple(data.shape[1:])
        if len(spatial) != len(self.patch_size):
            raise ValueError(
                f"sample {key.index} has data of shape {data.shape} ({len(spatial)} spatial axes) but "
                f"patch_size is {self.patch_size}; give one patch size per spatial axis"
            )
        lower = self._lower_corner(sample, key, spatial)
        out = {k: v for k, v in sample.items() if not isinstance(v, (np.ndarray, dict))}
        out["data"] = crop_patch(data, lower, self.patch_size, self.pad_value)
        if "seg" in sample:
            out["seg"] = crop_patch(np.asarray(sample["seg"]), lower, self.patch_size, 0)
        out["patch_lower"] = tuple(lower)
        return out
