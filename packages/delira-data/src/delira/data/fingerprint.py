"""The dataset fingerprint: what a planner needs to know about a dataset, computed once and cached.

Per case: the spatial shape and spacing, the shape after cropping to the nonzero region, the voxel
count of every label and the sizes (mm³) of each label's connected components. Per channel,
pooled over the cases: statistics of the foreground intensities (``seg > 0``) from a seeded random
sample of at most ``samples_per_case`` voxels per case -- mean, std, min, max, median and the
0.5 / 99.5 percentiles (what CT normalisation clips to).

:func:`compute_fingerprint` reads every case once (threads), checks it on the way
(:mod:`delira.data.checks`: all problems of all cases raised together) and caches the result as
JSON; the cache is reused while its ``source`` signature -- path, size and modification time of
every input file -- is unchanged.

Needs scipy (connected components): ``pip install 'delira-data[fingerprint]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from delira.data.checks import _reads_records, label_counts, open_dataset, scan_cases
from delira.data.datasets import case_ids_of
from delira.data.preprocessing import atomic_write, crop_to_nonzero

__all__ = ["CaseFingerprint", "Fingerprint", "compute_fingerprint", "dataset_signature"]

#: bumped when the fingerprint's content changes (an older cache is recomputed)
FINGERPRINT_VERSION = 1

INTENSITY_KEYS = ("mean", "std", "min", "max", "median", "percentile_00_5", "percentile_99_5")


def _ndimage() -> Any:
    try:
        from scipy import ndimage
    except ImportError as exc:
        raise ImportError(
            "the dataset fingerprint needs scipy (connected components of the labels): "
            "pip install 'delira-data[fingerprint]' (or pip install scipy)"
        ) from exc
    return ndimage


@dataclass
class CaseFingerprint:
    """The fingerprint of one case.

    Attributes:
        case_id: the case's id.
        shape: spatial shape as read.
        spacing: mm per spatial axis.
        shape_after_crop: spatial shape after :func:`~delira.data.crop_to_nonzero`.
        class_voxels: label value -> voxel count (background 0 included).
        object_sizes: label value (> 0) -> sizes in mm³ of its connected components (face
            connectivity), largest first.
        nonzero_fraction: ``prod(shape_after_crop) / prod(shape)``: the share of the volume that the
            nonzero crop box keeps.
    """

    case_id: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    shape_after_crop: tuple[int, ...]
    class_voxels: dict[int, int] = field(default_factory=dict)
    object_sizes: dict[int, list[float]] = field(default_factory=dict)
    nonzero_fraction: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (label keys as strings)."""
        out = asdict(self)
        out["shape"], out["spacing"] = list(self.shape), list(self.spacing)
        out["shape_after_crop"] = list(self.shape_after_crop)
        out["class_voxels"] = {str(k): int(v) for k, v in self.class_voxels.items()}
        out["object_sizes"] = {str(k): [float(s) for s in v] for k, v in self.object_sizes.items()}
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CaseFingerprint:
        """Inverse of :meth:`to_dict`."""
        return cls(
            case_id=str(doc["case_id"]),
            shape=tuple(int(n) for n in doc["shape"]),
            spacing=tuple(float(s) for s in doc["spacing"]),
            shape_after_crop=tuple(int(n) for n in doc["shape_after_crop"]),
            class_voxels={int(k): int(v) for k, v in doc.get("class_voxels", {}).items()},
            object_sizes={int(k): [float(s) for s in v] for k, v in doc.get("object_sizes", {}).items()},
            nonzero_fraction=float(doc.get("nonzero_fraction", 1.0)),
        )


@dataclass
class Fingerprint:
    """The fingerprint of a dataset (see the module docstring).

    Attributes:
        cases: one :class:`CaseFingerprint` per case, in dataset order.
        channel_names: one name per image channel (``dataset.json``'s ``modality`` /
            ``channel_names``: ``["CT"]``, ``["T1", "T2"]``).
        labels: label value -> name.
        intensity: per channel ``{"mean", "std", "min", "max", "median", "percentile_00_5",
            "percentile_99_5"}`` of the foreground voxels pooled over the cases (NaN when no case
            has foreground).
        source: the signature of the inputs (:func:`dataset_signature`), which the cache compares.
    """

    cases: list[CaseFingerprint]
    channel_names: list[str]
    labels: dict[int, str]
    intensity: list[dict[str, float]]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def spacings(self) -> np.ndarray:
        """``(num_cases, ndim)`` float64 spacings."""
        return np.asarray([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes(self) -> np.ndarray:
        """``(num_cases, ndim)`` int64 spatial shapes as read."""
        return np.asarray([c.shape for c in self.cases], dtype=np.int64)

    @property
    def shapes_after_crop(self) -> np.ndarray:
        """``(num_cases, ndim)`` int64 spatial shapes after cropping to the nonzero region."""
        return np.asarray([c.shape_after_crop for c in self.cases], dtype=np.int64)

    @property
    def median_spacing(self) -> np.ndarray:
        """``(ndim,)`` float64 median spacing per axis."""
        return np.median(self.spacings, axis=0)

    @property
    def median_shape(self) -> np.ndarray:
        """``(ndim,)`` float64 median shape after cropping, per axis."""
        return np.median(self.shapes_after_crop, axis=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "version": FINGERPRINT_VERSION,
            "cases": [c.to_dict() for c in self.cases],
            "channel_names": list(self.channel_names),
            "labels": {str(k): str(v) for k, v in self.labels.items()},
            "intensity": [{k: float(v) for k, v in s.items()} for s in self.intensity],
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Fingerprint:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: ``doc`` is not a fingerprint of this version.
        """
        if doc.get("version") != FINGERPRINT_VERSION:
            raise ValueError(
                f"fingerprint version {doc.get('version')!r}; this delira-data reads version "
                f"{FINGERPRINT_VERSION}: recompute it (compute_fingerprint)"
            )
        return cls(
            cases=[CaseFingerprint.from_dict(c) for c in doc["cases"]],
            channel_names=[str(n) for n in doc["channel_names"]],
            labels={int(k): str(v) for k, v in doc["labels"].items()},
            intensity=[{k: float(v) for k, v in s.items()} for s in doc["intensity"]],
            source=dict(doc.get("source", {})),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fingerprint as JSON, atomically (the parent folder is created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1)
        atomic_write(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        """Read a fingerprint written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# -- the source signature -----------------------------------------------------------------------------
def dataset_signature(dataset: Any, *, samples_per_case: int = 10000, seed: int = 0) -> dict[str, Any]:
    """What the fingerprint of ``dataset`` depends on, JSON friendly.

    File datasets (records with ``"images"`` / ``"seg"`` paths, e.g. DecathlonDataset): every
    file's ``[path, size, mtime_ns]`` (``[path, -1, -1]`` when missing). Other datasets: the
    number of cases and a hash of their ids (content changes are not seen: pass no cache, or
    delete it). Plus the fingerprint version and the sampling parameters.
    """
    sig: dict[str, Any] = {
        "version": FINGERPRINT_VERSION,
        "samples_per_case": int(samples_per_case),
        "seed": int(seed),
        "num_cases": len(dataset),
    }
    orientation = getattr(dataset, "orientation", None)
    if orientation is not None:  # a reoriented dataset has other per-axis shapes and spacings
        sig["orientation"] = str(orientation)
    if _reads_records(dataset):
        files = []
        for record in dataset.items:
            for path in (*record["images"], record.get("seg")):
                if path is None:
                    continue
                try:
                    st = os.stat(path)
                    files.append([str(path), int(st.st_size), int(st.st_mtime_ns)])
                except OSError:
                    files.append([str(path), -1, -1])
        sig["kind"] = "files"
        sig["files"] = files
        metadata = getattr(dataset, "metadata", None)
        if metadata is not None:
            sig["dataset_json"] = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()
    else:
        ids = "\n".join(case_ids_of(dataset))
        sig["kind"] = "memory"
        sig["type"] = type(dataset).__name__
        sig["case_ids_sha256"] = hashlib.sha256(ids.encode()).hexdigest()
    return sig


# -- computing it -------------------------------------------------------------------------------------
def _case_fingerprint(
    sample: Mapping[str, Any], index: int, samples_per_case: int, seed: int, ndimage: Any
) -> tuple[CaseFingerprint, list[np.ndarray]]:
    data = np.asarray(sample["data"])
    spatial = tuple(int(n) for n in data.shape[1:])
    spacing = tuple(float(s) for s in sample.get("spacing", (1.0,) * len(spatial)))
    _, _, bbox = crop_to_nonzero(data)
    after = tuple(b - a for a, b in bbox)
    total = float(np.prod(spatial)) if spatial else 1.0
    fraction = float(np.prod(after)) / total if total else 1.0
    class_voxels: dict[int, int] = {}
    object_sizes: dict[int, list[float]] = {}
    samples: list[np.ndarray] = [np.empty(0, dtype=np.float32) for _ in range(data.shape[0])]
    seg = sample.get("seg")
    if seg is not None:
        seg = np.asarray(seg).reshape(spatial)
        class_voxels = label_counts(seg)
        voxel_mm3 = float(np.prod(spacing))
        for value in class_voxels:
            if value <= 0:
                continue
            components, n = ndimage.label(seg == value)
            sizes = np.bincount(components.reshape(-1), minlength=n + 1)[1:]
            object_sizes[value] = sorted((float(s) * voxel_mm3 for s in sizes), reverse=True)
        foreground = np.flatnonzero(seg.reshape(-1) > 0)
        if foreground.size > samples_per_case:
            rng = np.random.default_rng([int(seed), int(index)])
            foreground = foreground[
                np.sort(rng.choice(foreground.size, size=samples_per_case, replace=False))
            ]
        flat = data.reshape(data.shape[0], -1)
        samples = [flat[c, foreground].astype(np.float32) for c in range(data.shape[0])]
    case = CaseFingerprint(
        case_id=str(sample.get("case_id", index)),
        shape=spatial,
        spacing=spacing,
        shape_after_crop=after,
        class_voxels=class_voxels,
        object_sizes=object_sizes,
        nonzero_fraction=fraction,
    )
    return case, samples


def _intensity(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {k: float("nan") for k in INTENSITY_KEYS}
    v = values.astype(np.float64, copy=False)
    median, lo, hi = np.percentile(v, [50.0, 0.5, 99.5])
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "median": float(median),
        "percentile_00_5": float(lo),
        "percentile_99_5": float(hi),
    }


def _load_cache(path: Path, source: dict[str, Any]) -> Fingerprint | None:
    if not path.is_file():
        return None
    try:
        cached = Fingerprint.load(path)
    except (ValueError, KeyError, TypeError, OSError):  # corrupt or another version: recompute
        return None
    return cached if cached.source == source else None


def compute_fingerprint(
    dataset: Any,
    *,
    num_workers: int = 0,
    progress: bool = True,
    cache: str | os.PathLike[str] | None = None,
    samples_per_case: int = 10000,
    seed: int = 0,
) -> Fingerprint:
    """The fingerprint of a dataset, read with workers, checked, cached as JSON.

    Args:
        dataset: a delira.data dataset of sample dicts (``"data"`` ``(C, *spatial)``, ``"seg"``
            ``(1, *spatial)``, ``"spacing"``, ``"case_id"``), e.g.
            :class:`~delira.data.DecathlonDataset`; a str / path is read as an MSD folder.
        num_workers: threads reading and measuring cases (0: this thread).
        progress: show a progress bar (tqdm when installed, else a counter on stderr).
        cache: a JSON file: reused when its ``source`` signature equals the current one
            (:func:`dataset_signature`), else (re)computed and written atomically.
        samples_per_case: at most this many foreground voxels sampled per case for the intensity
            statistics (the same voxels for every channel; seeded by ``seed`` and the case index,
            so the result does not depend on ``num_workers``).
        seed: seeds the sampling.

    Returns:
        The :class:`Fingerprint`.

    Raises:
        DatasetError: some cases have problems (missing or corrupt files, label/image mismatches,
            NaN images, undeclared labels...): all of them listed.
        ImportError: scipy is missing.
    """
    if samples_per_case < 1:
        raise ValueError(f"samples_per_case must be >= 1, got {samples_per_case}")
    dataset = open_dataset(dataset)
    if len(dataset) == 0:
        raise ValueError("the dataset has no cases; nothing to fingerprint")
    source = dataset_signature(dataset, samples_per_case=samples_per_case, seed=seed)
    source = json.loads(json.dumps(source))
    cache_path = Path(cache) if cache is not None else None
    if cache_path is not None:
        cached = _load_cache(cache_path, source)
        if cached is not None:
            return cached
    ndimage = _ndimage()
    results = scan_cases(
        dataset,
        lambda i, s: _case_fingerprint(s, i, samples_per_case, seed, ndimage),
        num_workers=num_workers,
        progress=progress,
        desc="fingerprint",
    )
    cases = [r[0] for r in results if r is not None]
    per_case = [r[1] for r in results if r is not None]
    num_channels = len(per_case[0])
    intensity = [
        _intensity(np.concatenate([samples[c] for samples in per_case])) for c in range(num_channels)
    ]
    names = getattr(dataset, "channel_names", None)
    channel_names = [str(n) for n in names] if names else [f"channel_{c}" for c in range(num_channels)]
    labels = getattr(dataset, "label_names", None)
    if not labels:
        present = sorted({v for case in cases for v in case.class_voxels})
        labels = {v: ("background" if v == 0 else f"label_{v}") for v in present}
    fingerprint = Fingerprint(
        cases=cases,
        channel_names=channel_names,
        labels={int(k): str(v) for k, v in dict(labels).items()},
        intensity=intensity,
        source=source,
    )
    if cache_path is not None:
        fingerprint.save(cache_path)
    return fingerprint
