"""Reading one case (image channels, optional segmentation) from image files into a sample dict.

Images are read by a *reader*: a callable ``reader(path) -> image`` where ``image`` has ``.array``
(numpy, spatial axes first, in ``(x, y[, z])`` order, any channel axis after them) and optionally
``.spacing``, ``.origin`` and ``.direction`` -- :func:`delira.io.read_image` by default (installed
with ``pip install 'delira-data[io]'``). A reader may also return a plain numpy array.

With ``orientation`` (``"RAS"``, ``"LPS"``, any orientation code) every file is read reoriented to
that code (:class:`OrientedReader`: axes permuted and reversed, geometry updated, see
:mod:`delira.io.orientation`), so the cases' arrays, spacing and direction describe the reoriented
grid. To reorient for training *and* get predictions back in the files' layout, reorient in the
preprocessing instead (``Preprocessor(orientation=...)``, undone by ``invert_labels`` /
``invert_probabilities``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["CaseReader", "OrientedReader", "default_reader", "missing_files"]

Reader = Callable[[str], Any]


def default_reader() -> Reader:
    """:func:`delira.io.read_image`, imported on first use.

    Raises:
        ImportError: delira-io is not installed (the message says how to install it).
    """
    try:
        from delira.io import read_image
    except ImportError as exc:
        raise ImportError(
            "reading image files needs delira-io, which is not installed (or lacks read_image): "
            "pip install 'delira-data[io]', or pass reader=<callable path -> image> to the dataset"
        ) from exc
    return read_image


def _check_orientation(code: Any) -> str:
    """An orientation code upper-cased (checked by delira.io), or ValueError/TypeError saying why."""
    try:
        from delira.io.orientation import check_orientation
    except ImportError as exc:
        raise ImportError(
            "reorienting cases needs delira-io with delira.io.orientation: pip install -U 'delira-data[io]'"
        ) from exc
    return check_orientation(code)


class OrientedReader:
    """``reader(path)`` reoriented to an orientation code (picklable, for loader workers).

    Args:
        reader: ``reader(path) -> image`` (see the module docstring); None:
            ``delira.io.read_image(path, orientation=orientation)``.
        orientation: ``"RAS"``, ``"LPS"`` or any orientation code (case-insensitive).

    Returns (when called): a :class:`delira.io.Image` reoriented with :func:`delira.io.reorient`
    (its ``meta["orientation"]`` records the transform). An image without geometry (a plain
    array) has the identity direction, i.e. ``"LPS"``.

    Raises:
        ValueError: ``orientation`` is not an orientation code.
    """

    def __init__(self, reader: Reader | None, orientation: str) -> None:
        self.reader = reader
        self.orientation = _check_orientation(orientation)

    def __call__(self, path: str) -> Any:
        from delira.io import Image, read_image, reorient

        if self.reader is None:
            return read_image(path, orientation=self.orientation)
        image = self.reader(path)
        if not isinstance(image, Image):
            array = np.asarray(getattr(image, "array", image))
            _, spacing, origin, direction = _geometry(image, array)
            image = Image(array, spacing, origin, np.asarray(direction))
        return reorient(image, self.orientation)

    def __repr__(self) -> str:
        name = (
            "delira.io.read_image" if self.reader is None else getattr(self.reader, "__name__", self.reader)
        )
        return f"OrientedReader({name}, orientation={self.orientation!r})"


def missing_files(paths: Sequence[str]) -> list[str]:
    """The paths in ``paths`` that do not exist."""
    return [p for p in paths if not os.path.exists(p)]


def raise_missing(missing: Sequence[str], where: str) -> None:
    """Raise ``FileNotFoundError`` listing ``missing`` (at most 20 of them), if any."""
    if not missing:
        return
    shown = "\n  ".join(missing[:20])
    more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
    raise FileNotFoundError(
        f"{len(missing)} file(s) named by {where} do not exist:\n  {shown}{more}\n"
        "check the dataset folder (a partial download or extraction?) or fix the listing"
    )


def _geometry(image: Any, array: np.ndarray) -> tuple[int, tuple[float, ...], tuple[float, ...], tuple]:
    spacing = getattr(image, "spacing", None)
    nspatial = min(len(spacing) if spacing is not None else array.ndim, 3)
    if spacing is None:
        spacing = (1.0,) * nspatial
    spacing = tuple(float(s) for s in spacing)[:nspatial]
    origin = getattr(image, "origin", None)
    origin = (0.0,) * nspatial if origin is None else tuple(float(o) for o in origin)[:nspatial]
    direction = getattr(image, "direction", None)
    direction = np.eye(nspatial) if direction is None else np.asarray(direction, dtype=np.float64)
    direction_t = tuple(tuple(float(v) for v in row[:nspatial]) for row in direction[:nspatial])
    return nspatial, spacing, origin, direction_t


def _channels_first(array: np.ndarray, nspatial: int, path: str) -> np.ndarray:
    """``(*spatial[, C])`` -> ``(C, *spatial)``."""
    if array.ndim == nspatial:
        return array[None]
    if array.ndim == nspatial + 1:
        return np.moveaxis(array, -1, 0)
    raise ValueError(
        f"{path} has an array of shape {array.shape} with {nspatial} spatial axes; expected "
        f"{nspatial} spatial axes and at most one channel axis after them"
    )


class CaseReader:
    """Turn a case record into a sample dict (picklable, so it can travel to loader workers).

    Args:
        reader: ``reader(path) -> image`` (see the module docstring); None: :func:`default_reader`,
            resolved in the process that reads.
        orientation: None reads the files as stored; an orientation code (``"RAS"``, ``"LPS"``, ...)
            reads every file reoriented to it (``self.reader`` becomes an :class:`OrientedReader`).

    A record is a dict ``{"case_id": str, "images": [path, ...], "seg": path or None,
    "label": int or None, ...}``; each image file holds one channel (or several, on an axis after
    the spatial ones). The sample is ``{"data": float32 (C, *spatial), "seg": int16 (1, *spatial)
    (when the record has one), "label": int (when it has one), "case_id": str, "spacing",
    "origin": tuples of floats, "direction": tuple of tuples}`` plus the record's other
    ``str``/``int`` fields (e.g. ``"group"``).
    """

    def __init__(self, reader: Reader | None = None, orientation: str | None = None) -> None:
        self.orientation = None if orientation is None else _check_orientation(orientation)
        self.reader: Reader | None = reader if orientation is None else OrientedReader(reader, orientation)

    def _read(self, path: str) -> Any:
        reader = self.reader if self.reader is not None else default_reader()
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file {path} does not exist; check the dataset folder")
        return reader(path)

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        case_id = str(record["case_id"])
        channels = []
        geometry = None
        for path in record["images"]:
            image = self._read(path)
            array = np.asarray(getattr(image, "array", image))
            nspatial, spacing, origin, direction = _geometry(image, array)
            data = _channels_first(array, nspatial, path)
            if geometry is None:
                geometry = (spacing, origin, direction)
            elif channels and data.shape[1:] != channels[0].shape[1:]:
                raise ValueError(
                    f"case {case_id}: {path} has spatial shape {data.shape[1:]} but {record['images'][0]} "
                    f"has {channels[0].shape[1:]}; all channels of a case must have the same grid"
                )
            channels.append(data.astype(np.float32, copy=False))
        if not channels:
            raise ValueError(f"case {case_id} has no image files; give at least one per case")
        data = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
        sample: dict[str, Any] = {"data": np.ascontiguousarray(data, dtype=np.float32)}
        if record.get("seg") is not None:
            seg_image = self._read(record["seg"])
            seg = np.asarray(getattr(seg_image, "array", seg_image))
            if seg.shape != data.shape[1:]:
                raise ValueError(
                    f"case {case_id}: segmentation {record['seg']} has shape {seg.shape} but the image has "
                    f"spatial shape {data.shape[1:]}; they must be on the same voxel grid"
                )
            if seg.dtype.kind == "f" and not np.array_equal(seg, np.round(seg)):
                raise ValueError(f"case {case_id}: segmentation {record['seg']} holds non-integer values")
            sample["seg"] = np.ascontiguousarray(seg[None], dtype=np.int16)
        if record.get("label") is not None:
            sample["label"] = int(record["label"])
        sample["case_id"] = case_id
        assert geometry is not None
        sample["spacing"], sample["origin"], sample["direction"] = geometry
        for key, value in record.items():
            if key not in ("case_id", "images", "seg", "label") and isinstance(value, (str, int, float)):
                sample.setdefault(key, value)
        return sample

    def __repr__(self) -> str:
        name = (
            "delira.io.read_image" if self.reader is None else getattr(self.reader, "__name__", self.reader)
        )
        return f"CaseReader(reader={name})"
