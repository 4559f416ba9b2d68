"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel, converting its RAS affine to LPS geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._geometry import geometry_from_ras_affine, ras_affine_from_geometry
from .._image import Image
from .._optional import require
from ..errors import ImageWriteError


def _header_dict(header: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in header.keys():
        value = np.asarray(header[key])
        out[key] = value.item() if value.ndim == 0 else value.copy()
    return out


def read(path: Path) -> Image:
    """Read a NIfTI file; ``array`` keeps the stored dtype unless the header scales it (then float64)."""
    nib = require("nibabel", f"reading {path.name}")
    img = nib.load(str(path))
    # dataobj applies scl_slope/scl_inter when set and keeps the on-disk dtype otherwise.
    array = np.asarray(img.dataobj)
    ndim = min(array.ndim, 3)
    spacing, origin, direction = geometry_from_ras_affine(img.affine, ndim)
    meta = _header_dict(img.header)
    meta["format"] = "nifti"
    meta["ras_affine"] = np.asarray(img.affine, dtype=np.float64)
    return Image(array, spacing, origin, direction, meta)


def write(path: Path, image: Image) -> None:
    """Write a NIfTI-1 file with the geometry in both the sform and the qform (code 1, scanner).

    A 2D image is stored as a 2D NIfTI (its geometry embedded in 3D at z = 0); an image with extra
    axes and fewer than three spatial axes gets singleton spatial axes inserted, because NIfTI's
    fourth and later axes always follow three spatial ones.
    """
    nib = require("nibabel", f"writing {path.name}")
    array = image.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if image.ndim < 3 and array.ndim > image.ndim:
        array = array.reshape(image.spatial_shape + (1,) * (3 - image.ndim) + array.shape[image.ndim :])
    if array.ndim > 7:
        raise ImageWriteError(
            f"NIfTI stores at most 7 axes; the array to write to {path} has shape {array.shape}"
        )
    affine = ras_affine_from_geometry(image.spacing, image.origin, image.direction)  # type: ignore[arg-type]
    try:
        img = nib.Nifti1Image(array, affine)
    except Exception as exc:  # nibabel rejects dtypes NIfTI cannot store
        raise ImageWriteError(
            f"NIfTI cannot store an array of dtype {array.dtype} ({exc}); convert it, e.g. to float32"
        ) from exc
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    header = img.header
    source = image.meta if image.meta.get("format") == "nifti" else {}
    xyzt = source.get("xyzt_units")
    header["xyzt_units"] = int(xyzt) if xyzt is not None else 2 | 8  # mm, s
    pixdim = source.get("pixdim")
    if pixdim is not None and array.ndim > 3:  # the spacing of time and other non-spatial axes
        new = np.array(header["pixdim"])
        new[4 : array.ndim + 1] = np.asarray(pixdim)[4 : array.ndim + 1]
        header["pixdim"] = new
    if "descrip" in source:
        header["descrip"] = source["descrip"]
    nib.save(img, str(path))
