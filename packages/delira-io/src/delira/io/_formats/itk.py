"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._image import Image
from .._optional import require
from ..errors import ImageWriteError

_FORMAT_NAMES = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}


def read(path: Path) -> Image:
    """Read an ITK-readable file; ``array`` is ``(X, Y[, Z][, C])`` in the stored dtype.

    ITK arrays are ``(Z, Y, X[, C])``; the spatial axes are reversed here (a view, no copy), vector
    components stay last. Images with more than three spatial axes keep the first three as spatial
    and the others as extra axes (their spacing is in ``meta["itk_spacing"]``).
    """
    sitk = require("SimpleITK", f"reading {path.name}")
    img = sitk.ReadImage(str(path))
    itk_ndim = img.GetDimension()
    array = sitk.GetArrayFromImage(img)
    spatial = tuple(range(itk_ndim - 1, -1, -1))
    array = array.transpose(spatial + tuple(range(itk_ndim, array.ndim)))
    ndim = min(itk_ndim, 3)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(itk_ndim, itk_ndim)
    meta: dict[str, object] = {key: img.GetMetaData(key) for key in img.GetMetaDataKeys()}
    meta["format"] = _FORMAT_NAMES.get(path.suffix.lower(), "itk")
    meta["itk_pixel_type"] = img.GetPixelIDTypeAsString()
    meta["itk_spacing"] = tuple(img.GetSpacing())
    return Image(
        array,
        tuple(img.GetSpacing())[:ndim],
        tuple(img.GetOrigin())[:ndim],
        direction[:ndim, :ndim],
        meta,
    )


def write(path: Path, image: Image) -> None:
    """Write through SimpleITK; one non-spatial axis at most, stored as vector components."""
    sitk = require("SimpleITK", f"writing {path.name}")
    array = image.array
    extra = array.ndim - image.ndim
    if extra > 1:
        raise ImageWriteError(
            f"{path.suffix} stores at most one non-spatial axis (vector components) but the image has "
            f"shape {array.shape} with {image.ndim} spatial axes; write .nii/.nii.gz for more axes"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    spatial = tuple(range(image.ndim - 1, -1, -1))
    itk_array = np.ascontiguousarray(array.transpose(spatial + tuple(range(image.ndim, array.ndim))))
    try:
        img = sitk.GetImageFromArray(itk_array, isVector=extra == 1)
    except Exception as exc:
        raise ImageWriteError(
            f"SimpleITK cannot store an array of dtype {array.dtype} and shape {array.shape} ({exc}); "
            "convert it, e.g. to float32"
        ) from exc
    img.SetSpacing(tuple(image.spacing))  # type: ignore[arg-type]
    img.SetOrigin(tuple(image.origin))  # type: ignore[arg-type]
    img.SetDirection(tuple(np.asarray(image.direction).reshape(-1)))
    sitk.WriteImage(img, str(path))
