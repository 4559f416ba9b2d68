"""Dataset checks before training: every problem of every case, listed at once.

What is found (each problem names the case, the file and the fix):

- a file that ``dataset.json`` lists but that does not exist;
- a file that cannot be read (a truncated or corrupt ``.nii.gz``: the reader's error is kept);
- channel files, or an image and its label, of different spatial shapes;
- an image and its label of different geometry (spacing, origin or direction differing by more
  than ``1e-3`` relative, with ``1e-3`` absolute slack for values near 0), when the reader exposes
  them;
- non-integer label values (``0.5``): checked on the label *as stored*, before any integer cast;
- NaN or infinite image values;
- label values that ``dataset.json``'s ``labels`` does not declare.

:func:`check_dataset` runs them over a dataset or an MSD folder and raises one
:class:`DatasetError`; :func:`check_case` checks one sample; :func:`read_case_checked` reads one
case and checks it (what :func:`delira.data.fingerprint.compute_fingerprint` and
:class:`delira.data.PreprocessedDataset` use while they read every case anyway).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from delira.data.datasets import LazyDataset, case_ids_of
from delira.data.formats.cases import CaseReader, _channels_first, _geometry, default_reader

__all__ = ["DatasetError", "check_case", "check_dataset", "label_counts", "read_case_checked"]

T = TypeVar("T")

#: relative (and absolute, for values near zero) tolerance of the image/label geometry comparison
GEOMETRY_TOLERANCE = 1e-3


class DatasetError(ValueError):
    """A dataset with problems that would spoil training; ``problems`` lists every one of them.

    Each problem is one line naming the case id, the file (where there is one) and the fix.
    """

    def __init__(self, problems: Sequence[str], where: str | None = None) -> None:
        self.problems = list(problems)
        self.where = where
        shown = "\n  - ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        place = f" in {where}" if where else ""
        super().__init__(
            f"{len(self.problems)} problem(s) found{place}; fix them and run again:\n  - {shown}{more}"
        )


# -- one sample ---------------------------------------------------------------------------------------
def label_counts(seg: np.ndarray) -> dict[int, int]:
    """Voxel count of every value in an integer-valued label array (any shape).

    Returns:
        ``{value: count}`` for the values present, sorted by value.
    """
    flat = np.asarray(seg).reshape(-1)
    if flat.size == 0:
        return {}
    if flat.dtype.kind not in "iub":
        flat = flat.astype(np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < 1 << 16:
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=hi + 1)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(flat, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts)}


def _close(a: Sequence[Any], b: Sequence[Any]) -> bool:
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape:
        return False
    return bool(np.allclose(a_arr, b_arr, rtol=GEOMETRY_TOLERANCE, atol=GEOMETRY_TOLERANCE))


def _fmt(values: Any) -> str:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2:
        return "(" + ", ".join(_fmt(row) for row in arr) + ")"
    return "(" + ", ".join(f"{v:.6g}" for v in arr.reshape(-1)) + ")"


def check_case(
    sample: Mapping[str, Any],
    declared_labels: Iterable[int] | None = None,
    files: Mapping[str, Any] | None = None,
) -> list[str]:
    """The problems of one sample (an empty list when it is fine).

    Args:
        sample: ``{"data": (C, *spatial) float, "seg": (1, *spatial) or (*spatial) label array in its
            stored dtype (optional), "case_id", "spacing", "origin", "direction"}``; the label's own
            geometry may be given as ``"seg_spacing"``, ``"seg_origin"``, ``"seg_direction"``.
        declared_labels: the label values ``dataset.json`` declares (None: not checked).
        files: ``{"images": [path per file], "seg": path}`` to name in the messages.

    Returns:
        One line per problem, naming the case, the file and the fix.
    """
    case_id = str(sample.get("case_id", "?"))
    files = files or {}
    images = [str(p) for p in files.get("images") or []]
    seg_file = str(files["seg"]) if files.get("seg") else "the label"
    image_name = images[0] if images else "the image"
    problems: list[str] = []
    data = np.asarray(sample["data"])
    if data.ndim < 2:
        return [f"case {case_id}: data has shape {data.shape}; expected (C, *spatial)"]
    spatial = data.shape[1:]
    if data.dtype.kind in "fc":
        bad = ~np.isfinite(data.reshape(data.shape[0], -1))
        per_channel = bad.sum(axis=1)
        if per_channel.any():
            by_file: dict[str, list[int]] = {}
            for c in np.flatnonzero(per_channel):
                name = images[c] if len(images) == data.shape[0] else image_name
                by_file.setdefault(name, []).append(int(c))
            for name, channels in by_file.items():
                n_nan = int(sum(np.isnan(data[c]).sum() for c in channels))
                n_inf = int(sum(per_channel[c] for c in channels)) - n_nan
                problems.append(
                    f"case {case_id}: image {name} (channel {', '.join(map(str, channels))}) holds {n_nan} NaN "
                    f"and {n_inf} infinite value(s); replace them (e.g. by the background intensity) and "
                    "save the file again"
                )
    if sample.get("seg") is None:
        return problems
    seg = np.asarray(sample["seg"])
    seg_spatial = seg.shape if seg.ndim == len(spatial) else seg.shape[1:]
    if seg.ndim not in (len(spatial), len(spatial) + 1) or (seg.ndim > len(spatial) and seg.shape[0] != 1):
        problems.append(
            f"case {case_id}: label {seg_file} has shape {seg.shape}; expected {tuple(spatial)} (one label "
            "map on the image's grid); save the segmentation as a single-channel image"
        )
    elif tuple(seg_spatial) != tuple(spatial):
        problems.append(
            f"case {case_id}: label {seg_file} has spatial shape {tuple(seg_spatial)} but image {image_name} "
            f"has {tuple(spatial)}; export the label on the image's voxel grid (same shape and header)"
        )
    for key in ("spacing", "origin", "direction"):
        a, b = sample.get(key), sample.get(f"seg_{key}")
        if a is not None and b is not None and not _close(a, b):
            problems.append(
                f"case {case_id}: label {seg_file} has {key} {_fmt(b)} but image {image_name} has {_fmt(a)} "
                f"(differ by more than {GEOMETRY_TOLERANCE:g} relative); export the label with the image's "
                "header (copy its affine) or resample it onto the image"
            )
    integer_valued = True
    if seg.dtype.kind == "b":
        seg = seg.astype(np.uint8)
    elif seg.dtype.kind in "fc":
        flat = seg.reshape(-1)
        fractional = flat != np.round(flat)  # NaN compares unequal: reported too
        if fractional.any():
            integer_valued = False
            examples = np.unique(flat[fractional])[:3]
            problems.append(
                f"case {case_id}: label {seg_file} holds {int(fractional.sum())} non-integer value(s) "
                f"(e.g. {', '.join(f'{float(v):g}' for v in examples)}); labels must be whole numbers: save "
                "the segmentation with an integer type (nearest-neighbour resampling, no interpolation)"
            )
    elif seg.dtype.kind not in "iu":
        return [*problems, f"case {case_id}: label {seg_file} has dtype {seg.dtype}; expected integers"]
    if integer_valued and declared_labels is not None:
        declared = {int(v) for v in declared_labels}
        present = set(label_counts(seg))
        undeclared = sorted(present - declared)
        if undeclared:
            problems.append(
                f"case {case_id}: label {seg_file} holds value(s) {undeclared} that dataset.json does not "
                f"declare in 'labels' (declared: {sorted(declared)}); add them to dataset.json's 'labels' "
                "or fix the segmentation"
            )
    return problems


# -- reading one case ---------------------------------------------------------------------------------
def _unreadable(case_id: str, path: str, exc: BaseException) -> str:
    return (
        f"case {case_id}: {path} cannot be read ({type(exc).__name__}: {exc}); the file is truncated or "
        "corrupt: download or export it again"
    )


def _read_record(record: Mapping[str, Any], reader: Callable[[str], Any]) -> tuple[dict | None, list[str]]:
    """Read a case record's files as stored; ``(raw sample, problems)``, the sample None on problems."""
    case_id = str(record["case_id"])
    problems: list[str] = []
    channels: list[np.ndarray] = []
    first_path = None
    geometry = None
    for path in record["images"]:
        try:
            image = reader(path)
            array = np.asarray(getattr(image, "array", image))
            nspatial, spacing, origin, direction = _geometry(image, array)
            data = _channels_first(array, nspatial, path)
        except ImportError:
            raise
        except ValueError as exc:
            if "spatial axes" in str(exc):
                problems.append(f"case {case_id}: {exc}")
            else:
                problems.append(_unreadable(case_id, path, exc))
            continue
        except Exception as exc:  # any reader error: corrupt, truncated, unsupported content
            problems.append(_unreadable(case_id, path, exc))
            continue
        if geometry is None:
            geometry, first_path = (spacing, origin, direction), path
        elif channels and data.shape[1:] != channels[0].shape[1:]:
            problems.append(
                f"case {case_id}: channel file {path} has spatial shape {data.shape[1:]} but {first_path} has "
                f"{channels[0].shape[1:]}; every channel of a case must be on the same voxel grid"
            )
            continue
        channels.append(data.astype(np.float32, copy=False))
    if problems or not channels:
        if not channels and not problems:
            problems.append(f"case {case_id} has no image files; list at least one per case")
        return None, problems
    data = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    assert geometry is not None
    sample: dict[str, Any] = {"data": np.ascontiguousarray(data, dtype=np.float32), "case_id": case_id}
    sample["spacing"], sample["origin"], sample["direction"] = geometry
    if record.get("seg") is not None:
        try:
            image = reader(record["seg"])
            seg = np.asarray(getattr(image, "array", image))
            _, sample["seg_spacing"], sample["seg_origin"], sample["seg_direction"] = _geometry(image, seg)
        except ImportError:
            raise
        except Exception as exc:
            return None, [_unreadable(case_id, record["seg"], exc)]
        sample["seg"] = seg[None] if seg.ndim == data.ndim - 1 else seg
    if record.get("label") is not None:
        sample["label"] = int(record["label"])
    for key, value in record.items():
        if key not in ("case_id", "images", "seg", "label") and isinstance(value, (str, int, float)):
            sample.setdefault(key, value)
    return sample, []


def _declared_labels(dataset: Any) -> set[int] | None:
    declared = getattr(dataset, "declared_labels", None)
    if declared is None:
        names = getattr(dataset, "label_names", None)
        declared = set(names) if names else None
    return {int(v) for v in declared} if declared else None


def _reads_records(dataset: Any) -> bool:
    """True when ``dataset[i]`` is ``CaseReader(items[i])`` (its files can be read as stored)."""
    return (
        isinstance(dataset, LazyDataset)
        and type(dataset).__getitem__ is LazyDataset.__getitem__
        and isinstance(dataset.load, CaseReader)
    )


def read_case_checked(
    dataset: Any, index: int, declared_labels: Iterable[int] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Read case ``index`` of ``dataset`` and check it (:func:`check_case`).

    File datasets (:class:`~delira.data.DecathlonDataset`, :class:`~delira.data.ManifestDataset`)
    are read file by file as stored, so the problems name the file and the label's dtype and
    geometry are checked before the integer cast; other datasets are read with ``dataset[index]``.

    Returns:
        ``(sample, [])`` with the sample as ``dataset[index]`` returns it (``"data"`` float32
        ``(C, *spatial)``, ``"seg"`` int16 ``(1, *spatial)``, ...), or ``(None, problems)``.
    """
    case_id = case_ids_of(dataset)[index] if hasattr(dataset, "case_ids") else str(index)
    if _reads_records(dataset):
        record = dataset.items[index]
        missing = [
            p for p in (*record["images"], record.get("seg")) if p is not None and not os.path.exists(p)
        ]
        if missing:
            listing = (
                "dataset.json" if getattr(dataset, "metadata", None) is not None else "the dataset's listing"
            )
            return None, [
                f"case {record['case_id']}: {p} is listed in {listing} but does not exist; restore the file "
                f"or remove the case from {listing}"
                for p in missing
            ]
        reader = dataset.load.reader if dataset.load.reader is not None else default_reader()
        sample, problems = _read_record(record, reader)
        if sample is None:
            return None, problems
        files = {"images": record["images"], "seg": record.get("seg")}
        problems = check_case(sample, declared_labels, files)
        if problems:
            return None, problems
        for key in ("seg_spacing", "seg_origin", "seg_direction"):
            sample.pop(key, None)
        if "seg" in sample:
            sample["seg"] = np.ascontiguousarray(sample["seg"], dtype=np.int16)
        return sample, []
    try:
        sample = dataset[index]
    except ImportError:
        raise
    except Exception as exc:
        return None, [
            f"case {case_id}: reading it failed ({type(exc).__name__}: {exc}); fix the case's files"
        ]
    problems = check_case({"case_id": case_id, **sample}, declared_labels)
    return (None, problems) if problems else (dict(sample), [])


# -- every case ---------------------------------------------------------------------------------------
class _Progress:
    """A tqdm bar when tqdm is installed, else a counter on stderr; silent when disabled."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled, self.done = total, desc, enabled, 0
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc=desc, unit="case")

    def update(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            end = "\n" if self.done == self.total else ""
            print(f"\r{self.desc}: {self.done}/{self.total} cases", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def open_dataset(dataset_or_folder: Any) -> Any:
    """A dataset as is; a str / path as the MSD folder it names (:class:`~delira.data.DecathlonDataset`,
    missing files reported by the checks instead of raising)."""
    if isinstance(dataset_or_folder, (str, os.PathLike)):
        from delira.data.formats.msd import DecathlonDataset

        return DecathlonDataset(Path(dataset_or_folder), allow_missing=True)
    return dataset_or_folder


def scan_cases(
    dataset: Any,
    per_case: Callable[[int, dict[str, Any]], T],
    *,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "checking",
    indices: Sequence[int] | None = None,
) -> list[T | None]:
    """Read and check every case (threads), apply ``per_case(index, sample)`` to the good ones.

    Returns:
        One result per index in ``indices`` (default all cases), in order.

    Raises:
        DatasetError: some cases have problems (all of them listed, in case order); ``per_case``
            ran on the good cases first.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    declared = _declared_labels(dataset)
    indices = list(range(len(dataset))) if indices is None else list(indices)

    def one(i: int) -> tuple[T | None, list[str]]:
        sample, problems = read_case_checked(dataset, i, declared)
        return (None, problems) if sample is None else (per_case(i, sample), [])

    bar = _Progress(len(indices), desc, progress)
    results: list[tuple[T | None, list[str]]] = []
    try:
        if num_workers > 0 and len(indices) > 1:
            with ThreadPoolExecutor(num_workers) as pool:
                for r in pool.map(one, indices):
                    results.append(r)
                    bar.update()
        else:
            for i in indices:
                results.append(one(i))
                bar.update()
    finally:
        bar.close()
    problems = [p for _, ps in results for p in ps]
    if problems:
        raise DatasetError(problems, where=_where(dataset))
    return [r for r, _ in results]


def _where(dataset: Any) -> str:
    root = getattr(dataset, "root", None)
    return str(root) if root is not None else type(dataset).__name__


def check_dataset(dataset_or_folder: Any, *, num_workers: int = 0) -> None:
    """Check every case of a dataset or an MSD / nnU-Net raw folder; raise if anything is wrong.

    Args:
        dataset_or_folder: a delira.data dataset of sample dicts, or the path of an MSD folder.
        num_workers: threads reading cases in parallel (0: this thread).

    Raises:
        DatasetError: one error listing every problem of every case (see the module docstring).
    """
    dataset = open_dataset(dataset_or_folder)
    scan_cases(dataset, lambda i, s: None, num_workers=num_workers)
