"""Reading and writing medical images: the format is chosen by the file name (or a folder)."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._image import Image
from .errors import DeliraIOError, ImageNotFoundError, ImageReadError, ImageWriteError
from .orientation import OrientationTransform, check_orientation, reorient

__all__ = ["read_image", "supported_formats", "write_image"]


@dataclass(frozen=True)
class _Format:
    name: str
    extensions: tuple[str, ...]
    module: str  # in delira.io._formats
    extra: str
    writable: bool


_FORMATS = (
    _Format("NIfTI", (".nii", ".nii.gz"), "nifti", "nifti", True),
    _Format("NRRD", (".nrrd", ".nhdr"), "itk", "itk", True),
    _Format("MetaImage", (".mha", ".mhd"), "itk", "itk", True),
    _Format("DICOM", (".dcm", ".dicom"), "dicom", "dicom", False),
    _Format("PNG", (".png",), "png", "image", True),
    _Format("TIFF", (".tif", ".tiff"), "tiff", "image", True),
)
_DICOM = _FORMATS[3]


def supported_formats() -> dict[str, dict[str, Any]]:
    """The formats :func:`read_image` knows: ``{name: {"extensions", "writable", "extra"}}``.

    A folder is read as a DICOM series.
    """
    return {f.name: {"extensions": f.extensions, "writable": f.writable, "extra": f.extra} for f in _FORMATS}


def _by_name(path: Path) -> _Format | None:
    name = path.name.lower()
    matches = [(ext, f) for f in _FORMATS for ext in f.extensions if name.endswith(ext)]
    return max(matches, key=lambda m: len(m[0]))[1] if matches else None


def _extension_list(writable_only: bool = False) -> str:
    return ", ".join(ext for f in _FORMATS if f.writable or not writable_only for ext in f.extensions)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _module(fmt: _Format) -> Any:
    return importlib.import_module(f"delira.io._formats.{fmt.module}")


def read_image(path: str | os.PathLike[str], *, orientation: str | None = None) -> Image:
    """Read a medical image file, or a folder holding one DICOM series, into an :class:`Image`.

    Formats (by extension, case-insensitive): NIfTI ``.nii``/``.nii.gz`` (nibabel), NRRD
    ``.nrrd``/``.nhdr`` and MetaImage ``.mha``/``.mhd`` (SimpleITK), DICOM ``.dcm``/``.dicom`` or any
    file with the DICOM preamble (pydicom), a folder of DICOM slices (pydicom), PNG and TIFF
    (Pillow, tifffile).

    Args:
        path: the file, or a folder of DICOM slices.
        orientation: None keeps the array as stored; an orientation code (``"RAS"``, ``"LPS"`` or
            any other, see :mod:`delira.io.orientation`) reorients it to the closest layout of that
            code (axes permuted and reversed, geometry updated so that world positions are
            unchanged; ``"RAS"`` is nibabel's ``as_closest_canonical``). The transform is recorded in
            ``meta["orientation"]`` (an :class:`~delira.io.OrientationTransform`);
            ``write_image(..., orientation="original")`` writes back in the stored layout.

    Returns:
        ``Image`` whose ``array`` is indexed ``(x, y[, z], *extra)`` in every format (see
        :class:`Image`), with spacing, origin and direction in LPS millimetres and the raw header
        in ``meta``. The dtype is the stored one in native byte order (DICOM: after
        RescaleSlope/Intercept; NIfTI: float64 when the header scales the data). The array may be a transposed view, not
        C-contiguous.

    Raises:
        ImageNotFoundError: ``path`` does not exist (also a ``FileNotFoundError``).
        ImageReadError: the extension is not supported (the message lists the supported ones),
            or the file is corrupt or truncated (the message names the file and the cause).
        MissingDependencyError: the reader's library is missing (the message names the extra).
    """
    path = Path(path)
    if not path.exists():
        raise ImageNotFoundError(
            f"image file {str(path)!r} does not exist (absolute: {path.absolute()}); check the path"
        )
    if path.is_dir():
        fmt, reader = _DICOM, "read_series"
    else:
        found = _by_name(path)
        if found is None and _is_dicom_file(path):
            found = _DICOM
        if found is None:
            raise ImageReadError(
                f"cannot read {path}: the extension {''.join(path.suffixes) or '(none)'!r} is not supported; "
                f"supported are {_extension_list()}, a DICOM file with any name, or a folder of DICOM slices"
            )
        fmt, reader = found, "read"
    if orientation is not None:  # a bad code fails before the file is read
        if not isinstance(orientation, str):
            raise TypeError(
                f"orientation must be None or an orientation code such as 'RAS' or 'LPS', got "
                f"{type(orientation).__name__} {orientation!r}"
            )
        check_orientation(orientation)
    module = _module(fmt)
    try:
        image = getattr(module, reader)(path)
        if not image.array.dtype.isnative:  # e.g. big-endian NIfTI; torch and others need native order
            image.array = image.array.astype(image.array.dtype.newbyteorder("="))
    except DeliraIOError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        what = "a DICOM series folder" if path.is_dir() else fmt.name
        raise ImageReadError(
            f"could not read {path} as {what}: {type(exc).__name__}: {str(exc).rstrip('.')}. "
            "The file may be corrupt, truncated or not in the format its name says"
        ) from exc
    return image if orientation is None else reorient(image, orientation)


def write_image(
    path: str | os.PathLike[str],
    image: Image,
    *,
    allow_geometry_loss: bool = False,
    orientation: str | OrientationTransform | None = None,
) -> None:
    """Write ``image`` in the format its file name asks for, keeping array, dtype and geometry.

    Writable: NIfTI ``.nii``/``.nii.gz`` (geometry in sform and qform, as float32), NRRD
    ``.nrrd``/``.nhdr`` and MetaImage ``.mha``/``.mhd`` (float64 geometry), PNG and TIFF (no
    geometry). DICOM is read-only. The parent folder must exist; an existing file is replaced.

    Args:
        path: output file; its extension picks the format.
        image: the :class:`Image`; ``array`` ``(x, y[, z], *extra)``. NRRD/MetaImage take at most
            one extra axis (vector components), PNG ``(X, Y[, C])`` uint8/uint16, TIFF ``(X, Y)``,
            ``(X, Y, 3|4)`` or ``(X, Y, Z)``.
        allow_geometry_loss: PNG and TIFF cannot store spacing, origin or direction; writing an
            image with non-default geometry to them raises unless this is True.
        orientation: the voxel layout of the file (world positions are the same in all): None
            writes ``image`` as it is; an orientation code (``"RAS"``, ``"LPS"``, ...) reorients it
            to that code first; ``"original"`` undoes the reorientation recorded in
            ``image.meta["orientation"]`` (by ``read_image(..., orientation=...)`` or
            :func:`~delira.io.reorient`), writing the layout the image was read in; an
            :class:`~delira.io.OrientationTransform` is undone (``transform.invert(image)``), e.g.
            the record of the image a label map was predicted on.

    Raises:
        ImageWriteError: unsupported extension, array shape or dtype for the format, or geometry
            the format cannot store.
        ValueError: ``orientation`` is not an orientation code, ``"original"`` without a record, or
            a transform made for another grid.
        MissingDependencyError: the writer's library is missing (the message names the extra).
    """
    path = Path(path)
    if not isinstance(image, Image):
        raise TypeError(
            f"write_image expects a delira.io.Image, got {type(image).__name__}; "
            "wrap an array as Image(array, spacing, origin, direction)"
        )
    image = _orient_for_writing(image, orientation)
    fmt = _by_name(path)
    if fmt is None or not fmt.writable:
        raise ImageWriteError(
            f"cannot write {path}: the extension {''.join(path.suffixes) or '(none)'!r} is not writable; "
            f"writable are {_extension_list(writable_only=True)}"
        )
    if fmt.name in ("PNG", "TIFF") and not allow_geometry_loss and not image.has_default_geometry():
        raise ImageWriteError(
            f"{fmt.name} cannot store the geometry of this image (spacing {image.spacing}, origin "
            f"{image.origin}, direction {np.asarray(image.direction).tolist()}); write .nii.gz, .nrrd or "
            f".mha to keep it, or pass allow_geometry_loss=True to write the pixels only"
        )
    if not path.parent.is_dir():
        raise ImageWriteError(
            f"cannot write {path}: the folder {path.parent} does not exist; create it first"
        )
    module = _module(fmt)
    try:
        module.write(path, image)
    except DeliraIOError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageWriteError(f"could not write {path} as {fmt.name}: {type(exc).__name__}: {exc}") from exc


def _orient_for_writing(image: Image, orientation: str | OrientationTransform | None) -> Image:
    if orientation is None:
        return image
    if isinstance(orientation, OrientationTransform):
        return orientation.invert(image)
    if not isinstance(orientation, str):
        raise TypeError(
            "orientation must be None, an orientation code such as 'RAS', 'original' or an "
            f"OrientationTransform, got {type(orientation).__name__} {orientation!r}"
        )
    if orientation.lower() == "original":
        record = image.meta.get("orientation")
        if record is None:
            raise ValueError(
                "orientation='original' undoes the reorientation recorded in image.meta['orientation'], "
                "but this image has no such record (it was not read with read_image(..., orientation=...) "
                "or made by reorient()); pass orientation=None to write it as it is, or the "
                "OrientationTransform to undo"
            )
        return OrientationTransform.from_dict(record).invert(image)
    return reorient(image, orientation)
