"""Preprocessing of real data, computed once and cached on disk as memory-mapped arrays.

The steps, in nnU-Net's order: crop to the non-zero region, normalise intensities, resample to a
target spacing, and record where each foreground class lies (for foreground oversampling). All
of it is plain numpy:

- :func:`crop_to_nonzero` -- the bounding box of the voxels that are non-zero in any channel;
- :func:`zscore` -- per-case z-score (MR): ``(x - mean) / std`` per channel;
- :class:`CTNormalization` -- dataset-wide: clip to the 0.5 / 99.5 percentiles of the foreground
  intensities of the training cases, then ``(x - mean) / std`` with their mean and std;
- :func:`resample` (images, linear) and :func:`resample_segmentation` (one-hot linear, argmax);
- :func:`~delira.data.patches.class_locations`.

:class:`PreprocessedDataset` runs a :class:`Preprocessor` over a dataset once, writes every case to
``cache_dir/<key>/`` as ``.npy`` files (the key is a hash of the parameters and the case ids, so
other parameters get another folder) and serves them as read-only memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from delira.data.datasets import Dataset, _check_index, case_ids_of
from delira.data.patches import class_locations

__all__ = [
    "CTNormalization",
    "PreprocessedDataset",
    "Preprocessor",
    "crop_to_nonzero",
    "resample",
    "resample_segmentation",
    "target_shape",
    "zscore",
]

_CACHE_VERSION = 1


# -- resampling ---------------------------------------------------------------------------------------
def target_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Spatial shape after resampling: ``round(shape * spacing / target_spacing)``, at least 1."""
    if len(shape) != len(spacing) or len(shape) != len(target_spacing):
        raise ValueError(
            f"shape {tuple(shape)}, spacing {tuple(spacing)} and target_spacing {tuple(target_spacing)} must "
            "have one entry per spatial axis"
        )
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing))


def _source_coordinates(n_in: int, n_out: int) -> np.ndarray:
    # Voxel centres of the output grid in input voxel units, both grids covering the same extent.
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _linear_axis(array: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    x = np.clip(_source_coordinates(n_in, n_out), 0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (x - lo).reshape([-1 if a == axis else 1 for a in range(array.ndim)]).astype(array.dtype)
    return np.take(array, lo, axis=axis) * (1 - w) + np.take(array, hi, axis=axis) * w


def resample(array: np.ndarray, new_shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample the spatial axes of a ``(C, *spatial)`` image to ``new_shape``.

    The output voxel ``j`` samples the input at ``(j + 0.5) * n_in / n_out - 0.5`` (both grids span
    the same physical extent; coordinates beyond the outer voxel centres take the edge value).

    Args:
        array: ``(C, *spatial)`` image.
        new_shape: the spatial output shape.
        order: 1 for (separable) linear interpolation, 0 for nearest neighbour (ties round up).

    Returns:
        ``(C, *new_shape)``; float32 for ``order=1`` (float64 input stays float64), the input
        dtype for ``order=0``.
    """
    new_shape = tuple(int(n) for n in new_shape)
    if len(new_shape) != array.ndim - 1:
        raise ValueError(
            f"array has shape {array.shape} ((C, *spatial)) but new_shape {new_shape} has {len(new_shape)} axes"
        )
    if order == 0:
        out = array
        for axis, n_out in enumerate(new_shape, start=1):
            n_in = out.shape[axis]
            if n_in != n_out:
                idx = np.clip(np.floor(_source_coordinates(n_in, n_out) + 0.5), 0, n_in - 1).astype(np.int64)
                out = np.take(out, idx, axis=axis)
        return out
    if order != 1:
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    out = array if array.dtype == np.float64 else array.astype(np.float32, copy=False)
    for axis, n_out in enumerate(new_shape, start=1):
        out = _linear_axis(out, axis, n_out)
    return out


def resample_segmentation(seg: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """Resample a ``(1, *spatial)`` label map: each label's mask linearly, then the argmax.

    Smoother than nearest neighbour for thin structures (nnU-Net's approach). Ties go to the
    smaller label.

    Returns:
        ``(1, *new_shape)`` with the dtype of ``seg``.
    """
    labels = np.unique(seg)
    if len(labels) == 1:
        return np.full((1, *new_shape), labels[0], dtype=seg.dtype)
    best = np.full((1, *new_shape), -1.0, dtype=np.float32)
    out = np.zeros((1, *new_shape), dtype=seg.dtype)
    for label in labels:
        score = resample((seg == label).astype(np.float32), new_shape, order=1)
        better = score > best
        out[better] = label
        best[better] = score[better]
    return out


# -- cropping and normalisation -----------------------------------------------------------------------
def crop_to_nonzero(
    data: np.ndarray, seg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple[tuple[int, int], ...]]:
    """Crop ``(C, *spatial)`` data (and ``(1, *spatial)`` seg) to the voxels non-zero in any channel.

    Returns:
        ``(data, seg, bbox)`` where ``bbox`` holds ``(start, stop)`` per spatial axis (the whole
        extent when every voxel is zero). The arrays are views of the inputs.
    """
    mask = np.any(data != 0, axis=0)
    bbox = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(np.any(mask, axis=other)) if other else np.flatnonzero(mask)
        bbox.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    window = (slice(None), *(slice(a, b) for a, b in bbox))
    return data[window], (seg[window] if seg is not None else None), tuple(bbox)


def zscore(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-channel z-score of a ``(C, *spatial)`` image (MR): ``(x - mean) / max(std, 1e-8)``.

    Args:
        data: ``(C, *spatial)`` image.
        mask: optional boolean ``(*spatial)``: the statistics use these voxels only (all voxels are
            normalised).

    Returns:
        float32 ``(C, *spatial)``.
    """
    out = np.empty(data.shape, dtype=np.float32)
    for c in range(data.shape[0]):
        values = data[c][mask] if mask is not None else data[c]
        mean, std = float(np.mean(values)), float(np.std(values))
        out[c] = (data[c] - mean) / max(std, 1e-8)
    return out


@dataclass
class CTNormalization:
    """Dataset-wide CT normalisation of one channel: clip to ``[lower, upper]``, then z-score.

    Attributes:
        lower, upper: the clipping range (the 0.5 / 99.5 percentiles of the foreground voxels).
        mean, std: the mean and standard deviation of the (unclipped) foreground voxels.
    """

    lower: float
    upper: float
    mean: float
    std: float

    @classmethod
    def fit(cls, foreground: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> CTNormalization:
        """Statistics from the foreground intensities of the training cases (a 1D array)."""
        values = np.asarray(foreground, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError(
                "no foreground voxels to fit the CT normalisation; the training cases need segmentations "
                "with labels > 0 (or use normalization='zscore')"
            )
        lower, upper = np.percentile(values, percentiles)
        return cls(float(lower), float(upper), float(values.mean()), float(values.std()))

    def __call__(self, channel: np.ndarray) -> np.ndarray:
        """``(clip(x, lower, upper) - mean) / max(std, 1e-8)`` as float32."""
        clipped = np.clip(channel.astype(np.float32, copy=False), self.lower, self.upper)
        return ((clipped - self.mean) / max(self.std, 1e-8)).astype(np.float32)


# -- the pipeline -------------------------------------------------------------------------------------
@dataclass
class Preprocessor:
    """The preprocessing of one case: crop, normalise, resample, locate the classes.

    Args:
        target_spacing: the spacing to resample to (None: keep each case's spacing).
        normalization: ``"zscore"`` (per case, MR), ``"ct"`` (dataset-wide, fitted by
            :meth:`fit`) or ``"none"``, one for all channels or one per channel.
        crop_nonzero: crop to the non-zero region first.
        max_locations: at most this many voxel coordinates kept per class.
        seed: seeds the sampling of foreground voxels (statistics and locations).
    """

    target_spacing: tuple[float, ...] | None = None
    normalization: str | tuple[str, ...] = "zscore"
    crop_nonzero: bool = True
    max_locations: int = 10000
    seed: int = 0
    ct: dict[int, CTNormalization] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            self.target_spacing = tuple(float(s) for s in self.target_spacing)
        schemes = (self.normalization,) if isinstance(self.normalization, str) else tuple(self.normalization)
        for s in schemes:
            if s not in ("zscore", "ct", "none"):
                raise ValueError(f"normalization must be 'zscore', 'ct' or 'none' (per channel), got {s!r}")

    def scheme(self, channel: int) -> str:
        """The normalisation scheme of ``channel``."""
        if isinstance(self.normalization, str):
            return self.normalization
        if channel >= len(self.normalization):
            raise ValueError(
                f"normalization lists {len(self.normalization)} schemes but the data has channel {channel}; "
                "give one scheme per channel"
            )
        return self.normalization[channel]

    def params(self) -> dict[str, Any]:
        """The parameters that determine the output (the cache key), JSON friendly."""
        out = asdict(self)
        out.pop("ct")
        out["normalization"] = (
            self.normalization if isinstance(self.normalization, str) else list(self.normalization)
        )
        return out

    def needs_fit(self, num_channels: int) -> bool:
        """True when some channel uses the dataset-wide CT normalisation that is not fitted yet."""
        return any(self.scheme(c) == "ct" and c not in self.ct for c in range(num_channels))

    def fit(self, dataset: Dataset, samples_per_case: int = 10000) -> None:
        """Fit the CT statistics of every ``"ct"`` channel on the foreground voxels of ``dataset``.

        Foreground: ``seg > 0`` where the samples have ``seg``, else the non-zero voxels.
        """
        rng = np.random.default_rng(self.seed)
        per_channel: dict[int, list[np.ndarray]] = {}
        for i in range(len(dataset)):
            sample = dataset[i]
            data = np.asarray(sample["data"])
            mask = np.asarray(sample["seg"])[0] > 0 if "seg" in sample else np.any(data != 0, axis=0)
            for c in range(data.shape[0]):
                if self.scheme(c) != "ct":
                    continue
                values = data[c][mask]
                if values.size > samples_per_case:
                    values = values[rng.choice(values.size, size=samples_per_case, replace=False)]
                per_channel.setdefault(c, []).append(values)
        for c, chunks in per_channel.items():
            self.ct[c] = CTNormalization.fit(np.concatenate(chunks))

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Preprocess one sample.

        Returns:
            ``{"data": float32 (C, *shape), "seg": int16 (1, *shape) (if given), "spacing": the new
            spacing, "original_spacing", "original_shape", "bbox": the crop in original voxels,
            "class_locations": {label: (K, ndim) int64} (if seg)}`` plus the sample's other
            metadata.
        """
        data = np.asarray(sample["data"])
        seg = np.asarray(sample["seg"]) if "seg" in sample else None
        spacing = tuple(float(s) for s in sample.get("spacing", (1.0,) * (data.ndim - 1)))
        out = {k: v for k, v in sample.items() if k not in ("data", "seg", "class_locations")}
        out["original_spacing"] = spacing
        out["original_shape"] = tuple(data.shape[1:])
        bbox = tuple((0, n) for n in data.shape[1:])
        if self.crop_nonzero:
            data, seg, bbox = crop_to_nonzero(data, seg)
        out["bbox"] = bbox
        channels = []
        for c in range(data.shape[0]):
            scheme = self.scheme(c)
            if scheme == "zscore":
                channels.append(zscore(data[c : c + 1])[0])
            elif scheme == "ct":
                if c not in self.ct:
                    raise RuntimeError(
                        f"channel {c} uses CT normalisation but the statistics are not fitted; call "
                        "Preprocessor.fit(training_dataset) first (PreprocessedDataset does it for you)"
                    )
                channels.append(self.ct[c](data[c]))
            else:
                channels.append(data[c].astype(np.float32))
        data = np.stack(channels)
        if self.target_spacing is not None:
            shape = target_shape(data.shape[1:], spacing, self.target_spacing)
            data = resample(data, shape, order=1).astype(np.float32, copy=False)
            if seg is not None:
                seg = resample_segmentation(seg, shape)
            spacing = self.target_spacing
        out["data"] = np.ascontiguousarray(data, dtype=np.float32)
        out["spacing"] = tuple(spacing)
        if seg is not None:
            out["seg"] = np.ascontiguousarray(seg, dtype=np.int16)
            out["class_locations"] = class_locations(
                out["seg"], max_per_class=self.max_locations, seed=self.seed
            )
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class PreprocessedDataset:
    """A dataset preprocessed once and served from memory-mapped ``.npy`` files.

    On construction, every case of ``source`` that is not in the cache yet is preprocessed and
    written to ``cache_dir/<key>/`` (``<case>_data.npy``, ``<case>_seg.npy``,
    ``<case>_locations.npz``, ``<case>.json``); ``<key>`` hashes the preprocessing parameters, the
    case ids and ``source_id``, so a change of any of them uses a new folder. CT statistics are
    fitted on ``source`` first and stored in ``plan.json``.

    Args:
        source: the raw dataset (e.g. a :class:`~delira.data.formats.DecathlonDataset`).
        preprocessor: the :class:`Preprocessor`.
        cache_dir: where the cache folders live.
        num_workers: threads preprocessing cases in parallel (0: this thread).
        source_id: identifies the raw data in the key (default ``repr(source)``, which names the
            folder for the file datasets).

    Samples: ``{"data": read-only float32 memmap (C, *shape), "seg": read-only int16 memmap
    (1, *shape), "class_locations": {label: (K, ndim) int64}, "case_id", "spacing", ...}``.
    """

    def __init__(
        self,
        source: Dataset,
        preprocessor: Preprocessor,
        cache_dir: str | os.PathLike[str],
        num_workers: int = 0,
        source_id: str | None = None,
    ) -> None:
        if len(source) == 0:
            raise ValueError("the source dataset is empty; nothing to preprocess")
        self.preprocessor = preprocessor
        self.case_ids = case_ids_of(source)
        labels = getattr(source, "labels", None)
        self.labels = list(labels) if labels is not None else None
        self.key = self.cache_key(
            preprocessor, self.case_ids, repr(source) if source_id is None else source_id
        )
        self.folder = Path(cache_dir) / self.key
        self.folder.mkdir(parents=True, exist_ok=True)
        plan_path = self.folder / "plan.json"
        if plan_path.is_file():
            plan = json.loads(plan_path.read_text())
            preprocessor.ct = {int(c): CTNormalization(**v) for c, v in plan["ct"].items()}
        todo = [i for i, c in enumerate(self.case_ids) if not Path(f"{self._base(c)}.json").is_file()]
        if todo and preprocessor.needs_fit(np.asarray(source[0]["data"]).shape[0]):
            preprocessor.fit(source)
        if not plan_path.is_file():
            plan = {
                "version": _CACHE_VERSION,
                "params": preprocessor.params(),
                "ct": {str(c): asdict(v) for c, v in preprocessor.ct.items()},
                "case_ids": self.case_ids,
            }
            _write_atomic(plan_path, json.dumps(plan, indent=2).encode())

        def run(i: int) -> None:
            self._write_case(self.case_ids[i], preprocessor(source[i]))

        if num_workers > 0 and len(todo) > 1:
            with ThreadPoolExecutor(num_workers) as pool:
                list(pool.map(run, todo))
        else:
            for i in todo:
                run(i)

    @staticmethod
    def cache_key(preprocessor: Preprocessor, case_ids: Sequence[str], source_id: str) -> str:
        """The cache folder name: a hash of the parameters, the case ids and the source id."""
        doc = json.dumps(
            {
                "version": _CACHE_VERSION,
                "params": preprocessor.params(),
                "cases": list(case_ids),
                "source": source_id,
            },
            sort_keys=True,
        )
        return hashlib.sha256(doc.encode()).hexdigest()[:16]

    def _base(self, case_id: str) -> Path:
        """The cache files' path prefix of a case (ids that are not plain file names are escaped)."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", case_id).lstrip(".")
        if stem != case_id:
            stem = f"{stem}_{hashlib.sha256(case_id.encode()).hexdigest()[:8]}"
        return self.folder / stem

    def _write_case(self, case_id: str, sample: dict[str, Any]) -> None:
        base = self._base(case_id)
        _save_npy(Path(f"{base}_data.npy"), sample["data"])
        meta = {k: _jsonable(v) for k, v in sample.items() if k not in ("data", "seg", "class_locations")}
        meta = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        if "seg" in sample:
            _save_npy(Path(f"{base}_seg.npy"), sample["seg"])
            locations = {str(c): v for c, v in sample["class_locations"].items()}
            tmp = Path(f"{base}_locations.tmp.npz")
            np.savez(tmp, **locations)
            os.replace(tmp, f"{base}_locations.npz")
        meta["has_seg"] = "seg" in sample
        _write_atomic(Path(f"{base}.json"), json.dumps(meta).encode())  # written last: marks the case done

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        i = _check_index(index, len(self), type(self).__name__)
        base = self._base(self.case_ids[i])
        meta_path = Path(f"{base}.json")
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path} is missing from the preprocessing cache; delete {self.folder} and rebuild it"
            )
        meta = json.loads(meta_path.read_text())
        sample: dict[str, Any] = {"data": np.load(f"{base}_data.npy", mmap_mode="r")}
        if meta.pop("has_seg"):
            sample["seg"] = np.load(f"{base}_seg.npy", mmap_mode="r")
            with np.load(f"{base}_locations.npz") as f:
                sample["class_locations"] = {int(c): f[c] for c in f.files}
        for k, v in meta.items():
            sample[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        return sample

    def __repr__(self) -> str:
        return f"PreprocessedDataset({len(self)} cases in {str(self.folder)!r})"


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array))
    os.replace(tmp, path)


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
