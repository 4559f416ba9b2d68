"""DICOM through pydicom: one file (single- or multi-frame), or a folder holding one series.

Pixel values go through the modality LUT (``RescaleSlope``/``RescaleIntercept``, e.g. CT values in
HU), like ITK does. The output dtype depends on the header only, never on the pixel values:

* no rescale (slope 1, intercept 0): the stored dtype;
* integer slope and intercept: the smallest of uint8, int8, uint16, int16, uint32, int32, int64
  that holds every value the stored bits can take after rescaling (a signed 16-bit CT with
  intercept -1024 gives int32, as in SimpleITK);
* otherwise float32.

Geometry: x runs along a row (column index), y down the columns (row index), z across slices
(frames); ``spacing = (PixelSpacing[1], PixelSpacing[0], dz)``, ``origin`` is the
ImagePositionPatient of the first slice, ``direction`` has the row cosine, the column cosine and
the slice normal as columns. For a folder, slices are sorted along the normal and ``dz`` is the
distance between slice positions; for one file ``dz`` is the step of GridFrameOffsetVector (RT
dose), else SpacingBetweenSlices, else 1 (ITK's choices).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._image import Image
from .._optional import require
from ..errors import ImageReadError

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # PixelData, FloatPixelData, DoubleFloatPixelData
_INT_DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64]


# --- header access -------------------------------------------------------------------------------
def _find(ds: Any, keyword: str, default: Any = None) -> Any:
    """An attribute from the dataset, else from the enhanced (multi-frame) functional groups."""
    if keyword in ds:
        return ds.data_element(keyword).value
    for group_seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(group_seq)
        if not groups:
            continue
        for macro in groups[0]:  # the first frame stands for all
            if macro.VR == "SQ" and macro.value:
                item = macro.value[0]
                if keyword in item:
                    return item.data_element(keyword).value
    return default


def _plain(value: Any) -> Any:
    """A pydicom element value as plain Python (lists, str, int, float, bytes, dicts)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def dataset_to_dict(ds: Any) -> dict[str, Any]:
    """The data elements of ``ds`` except pixel data, keyed by keyword (or ``"(gggg,eeee)"``)."""
    out: dict[str, Any] = {}
    for elem in ds:
        if int(elem.tag) in _PIXEL_TAGS:
            continue
        key = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            out[key] = [dataset_to_dict(item) for item in elem.value]
        else:
            out[key] = _plain(elem.value)
    return out


# --- pixel values --------------------------------------------------------------------------------
def _rescale(ds: Any) -> tuple[float, float]:
    slope = _find(ds, "RescaleSlope")
    intercept = _find(ds, "RescaleIntercept")
    return (
        1.0 if slope in (None, "") else float(slope),
        0.0 if intercept in (None, "") else float(intercept),
    )


def _stored_range(ds: Any, stored_dtype: np.dtype) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or stored_dtype.itemsize * 8)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _output_dtype(datasets: list[Any], stored_dtype: np.dtype) -> np.dtype:
    rescales = {_rescale(ds) for ds in datasets}
    if (
        rescales == {(1.0, 0.0)}
        or stored_dtype.kind not in "iu"
        or int(datasets[0].get("SamplesPerPixel", 1)) > 1
    ):
        return stored_dtype
    if not all(s.is_integer() and i.is_integer() for s, i in rescales):
        return np.dtype(np.float32)
    low, high = 0, 0
    for ds in datasets:
        slope, intercept = _rescale(ds)
        lo, hi = _stored_range(ds, stored_dtype)
        ends = (lo * slope + intercept, hi * slope + intercept)
        low, high = min(low, *ends), max(high, *ends)
    for dtype in _INT_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.float64)


def _pixels(stored: np.ndarray, ds: Any, dtype: np.dtype) -> np.ndarray:
    """The stored pixels of ``ds`` after the modality LUT, in ``dtype``."""
    slope, intercept = _rescale(ds)
    if dtype == stored.dtype and (slope, intercept) == (1.0, 0.0):
        return stored
    if dtype.kind == "f":
        return (stored.astype(np.float64) * slope + intercept).astype(dtype)
    return (stored.astype(np.int64) * int(slope) + int(intercept)).astype(dtype)


# --- geometry ------------------------------------------------------------------------------------
def _in_plane(ds: Any) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray]:
    """Row cosine, column cosine, (x, y) spacing and the position of the first pixel."""
    orientation = _find(ds, "ImageOrientationPatient")
    if orientation is None:
        row, col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    else:
        cosines = np.asarray([float(v) for v in orientation])
        row, col = cosines[:3], cosines[3:]
    pixel_spacing = _find(ds, "PixelSpacing") or _find(ds, "ImagerPixelSpacing") or (1.0, 1.0)
    position = _find(ds, "ImagePositionPatient")
    origin = np.zeros(3) if position is None else np.asarray([float(v) for v in position])
    return row, col, (float(pixel_spacing[1]), float(pixel_spacing[0])), origin


def _direction(row: np.ndarray, col: np.ndarray) -> np.ndarray:
    return np.stack([row, col, np.cross(row, col)], axis=1)


def _to_xyz(frames: np.ndarray) -> np.ndarray:
    """``(Z, rows, cols[, S])`` -> ``(x, y, z[, S])`` (a view)."""
    return frames.transpose((2, 1, 0, *range(3, frames.ndim)))


# --- readers -------------------------------------------------------------------------------------
def _assume_transfer_syntax(ds: Any, pydicom: Any) -> None:
    """Give a file read without its meta header the transfer syntax its encoding shows."""
    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit_vr, little_endian = getattr(ds, "original_encoding", (None, None))
    if implicit_vr is None:
        return
    uid = pydicom.uid
    syntax = (
        uid.ImplicitVRLittleEndian
        if implicit_vr
        else uid.ExplicitVRLittleEndian
        if little_endian
        else uid.ExplicitVRBigEndian
    )
    if not hasattr(ds, "file_meta"):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax


def read(path: Path) -> Image:
    """Read one DICOM file: ``array`` is ``(X, Y, frames[, samples])``, one frame for a single slice."""
    pydicom = require("pydicom", f"reading {path.name}")
    try:
        ds = pydicom.dcmread(str(path))
    except require("pydicom.errors", f"reading {path.name}").InvalidDicomError as exc:
        # old files without the 128-byte preamble and "DICM" prefix need force=True
        ds = pydicom.dcmread(str(path), force=True)
        if "Rows" not in ds or "Columns" not in ds:
            raise ImageReadError(
                f"{path} is not a DICOM file ({exc}); expected a DICOM image with the DICM preamble"
            ) from exc
        _assume_transfer_syntax(ds, pydicom)
    if not any(int(tag) in _PIXEL_TAGS for tag in ds.keys()):
        raise ImageReadError(
            f"{path} is a DICOM file without pixel data (SOP class {ds.get('SOPClassUID', 'unknown')}); "
            "expected an image, e.g. CT or MR"
        )
    stored = ds.pixel_array
    pixels = _pixels(stored, ds, _output_dtype([ds], stored.dtype))
    if int(ds.get("NumberOfFrames") or 1) == 1:
        pixels = pixels[None]
    row, col, (sx, sy), origin = _in_plane(ds)
    meta = dataset_to_dict(ds)
    meta["format"] = "dicom"
    return Image(_to_xyz(pixels), (sx, sy, _frame_spacing(ds)), tuple(origin), _direction(row, col), meta)


def _frame_spacing(ds: Any) -> float:
    """The distance between frames: GridFrameOffsetVector (RT dose), SpacingBetweenSlices, else 1."""
    offsets = ds.get("GridFrameOffsetVector")
    if offsets is not None and len(offsets) > 1:
        gaps = np.diff([float(v) for v in offsets])
        if np.all(gaps > 0) and np.allclose(gaps, gaps[0], rtol=1e-4):
            return float(gaps[0])
    dz = _find(ds, "SpacingBetweenSlices")
    return float(dz) if dz else 1.0


def read_series(folder: Path) -> Image:
    """Read the one DICOM series in ``folder`` (non-DICOM files and files without pixels are skipped).

    ``array`` is ``(X, Y, Z[, samples])`` with slices sorted along the slice normal.
    """
    pydicom = require("pydicom", f"reading the DICOM folder {folder}")
    invalid_dicom = require("pydicom.errors", f"reading the DICOM folder {folder}").InvalidDicomError
    headers: list[tuple[Path, Any]] = []
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(str(file), stop_before_pixels=True)
        except invalid_dicom:
            continue  # not a DICOM file (a README, a thumbnail...)
        except Exception as exc:
            raise ImageReadError(
                f"could not read DICOM file {file} of the series in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        if "Rows" in ds and "Columns" in ds:  # an image, not a DICOMDIR or a report
            headers.append((file, ds))
    if not headers:
        raise ImageReadError(
            f"{folder} holds no DICOM image files; expected a folder with one file per slice"
        )
    series: dict[str, list[tuple[Path, Any]]] = {}
    for file, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((file, ds))
    if len(series) > 1:
        listing = "; ".join(
            f"{uid or '<no SeriesInstanceUID>'} ({len(items)} files, e.g. {items[0][0].name}, "
            f"'{items[0][1].get('SeriesDescription', '')}')"
            for uid, items in series.items()
        )
        raise ImageReadError(
            f"{folder} holds {len(series)} DICOM series: {listing}; "
            "move each series into its own folder, or read a single file"
        )
    items = next(iter(series.values()))
    return _assemble(folder, items, pydicom)


def _assemble(folder: Path, items: list[tuple[Path, Any]], pydicom: Any) -> Image:
    first_file, first = items[0]
    row, col, (sx, sy), _ = _in_plane(first)
    normal = np.cross(row, col)
    for file, ds in items:
        if int(ds.get("NumberOfFrames") or 1) != 1 and len(items) > 1:
            raise ImageReadError(
                f"{file} is a multi-frame DICOM file inside the series folder {folder}; "
                "read multi-frame files one at a time"
            )
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise ImageReadError(
                f"slices of the series in {folder} differ in size: {first_file.name} is "
                f"{first.Rows}x{first.Columns}, {file.name} is {ds.Rows}x{ds.Columns}; "
                "expected one series of equally sized slices"
            )
        r, c, _, _ = _in_plane(ds)
        if not (np.allclose(r, row, atol=1e-4) and np.allclose(c, col, atol=1e-4)):
            raise ImageReadError(
                f"slices of the series in {folder} have different orientations ({first_file.name}, "
                f"{file.name}); expected parallel slices"
            )
    has_positions = all(_find(ds, "ImagePositionPatient") is not None for _, ds in items)
    if has_positions:
        positions = [_in_plane(ds)[3] for _, ds in items]
        keys = [float(p @ normal) for p in positions]
    else:
        keys = [float(ds.get("InstanceNumber") or 0) for _, ds in items]
    order = sorted(range(len(items)), key=lambda i: keys[i])
    items = [items[i] for i in order]
    keys = [keys[i] for i in order]
    for a, b in zip(range(len(keys) - 1), range(1, len(keys))):
        if abs(keys[b] - keys[a]) < 1e-6:
            raise ImageReadError(
                f"{items[a][0].name} and {items[b][0].name} in {folder} are at the same slice position; "
                "expected one series with one file per slice"
            )
    if len(items) > 1 and has_positions:
        gaps = np.diff(keys)
        dz = float((keys[-1] - keys[0]) / (len(keys) - 1))
        if np.max(np.abs(gaps - dz)) > 1e-3 * max(dz, 1e-6):
            warnings.warn(
                f"the slices in {folder} are not evenly spaced (gaps {gaps.min():.4g} to {gaps.max():.4g} mm); "
                f"the image uses their mean spacing {dz:.4g} mm",
                stacklevel=4,
            )
    else:
        spacing_tag = _find(items[0][1], "SpacingBetweenSlices")
        dz = float(spacing_tag) if spacing_tag else 1.0
    datasets = []
    for file, _ in items:
        try:
            datasets.append(pydicom.dcmread(str(file)))
        except Exception as exc:
            raise ImageReadError(
                f"could not read DICOM file {file} of the series in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
    slices = []
    for (file, _), ds in zip(items, datasets):
        try:
            stored = ds.pixel_array
        except Exception as exc:
            raise ImageReadError(
                f"could not decode the pixels of DICOM file {file} of the series in {folder}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        slices.append(stored)
    dtype = _output_dtype(datasets, slices[0].dtype)
    volume = np.stack([_pixels(stored, ds, dtype) for stored, ds in zip(slices, datasets)])
    origin = _in_plane(datasets[0])[3]
    meta = dataset_to_dict(datasets[0])
    meta["format"] = "dicom-series"
    meta["files"] = [str(file) for file, _ in items]
    return Image(_to_xyz(volume), (sx, sy, dz), tuple(origin), _direction(row, col), meta)
