"""TIFF through tifffile: 2D (grayscale or RGB(A) samples) or a 3D stack of pages. No geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._image import Image
from .._optional import require
from ..errors import ImageReadError, ImageWriteError


def _tags(page: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in page.tags.values():
        value = tag.value
        out[tag.name] = value if isinstance(value, (int, float, str, bytes, tuple)) else str(value)
    return out


def read(path: Path) -> Image:
    """Read the first series of a TIFF.

    ``array`` is ``(X, Y)``, ``(X, Y, S)`` (samples, e.g. RGB) or ``(X, Y, Z)`` for a stack of pages
    (``(X, Y, Z, S)`` with samples); spacing is 1, origin 0, direction the identity.
    """
    tifffile = require("tifffile", f"reading {path.name}")
    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        axes = series.axes
        data = series.asarray()
        meta = _tags(tif.pages[0])
    meta["format"] = "tiff"
    meta["axes"] = axes
    samples = axes.endswith("S")
    layout = axes[:-1] if samples else axes
    if layout == "YX":
        order: tuple[int, ...] = (1, 0)
    elif len(layout) == 3 and layout.endswith("YX"):
        order = (2, 1, 0)  # (pages, Y, X) -> (X, Y, Z)
    else:
        raise ImageReadError(
            f"{path} has TIFF axes {axes!r}; delira.io reads 'YX', 'YXS' and one stack axis before "
            "'YX' (e.g. 'ZYX'); read it with tifffile directly"
        )
    ndim = len(order)
    array = data.transpose(order + ((data.ndim - 1,) if samples else ()))
    return Image(array, (1.0,) * ndim, (0.0,) * ndim, np.eye(ndim), meta)


def write(path: Path, image: Image) -> None:
    """Write ``(X, Y)``, ``(X, Y, 3|4)`` (RGB(A)) or a ``(X, Y, Z)`` stack; any numeric dtype."""
    tifffile = require("tifffile", f"writing {path.name}")
    array = image.array
    extra = array.ndim - image.ndim
    rgb = extra == 1 and array.shape[-1] in (3, 4)
    if image.ndim not in (2, 3) or extra > 1 or (extra == 1 and not rgb):
        raise ImageWriteError(
            f"TIFF stores (X, Y), (X, Y, 3|4) RGB(A) or (X, Y, Z) images; got shape {array.shape} "
            f"with {image.ndim} spatial axes. Write .nii.gz/.nrrd for other shapes"
        )
    spatial = tuple(range(image.ndim - 1, -1, -1))
    data = np.ascontiguousarray(array.transpose(spatial + tuple(range(image.ndim, array.ndim))))
    extrasamples = ("unassalpha",) if rgb and array.shape[-1] == 4 else None
    tifffile.imwrite(
        str(path),
        data,
        photometric="rgb" if rgb else "minisblack",
        extrasamples=extrasamples,
        metadata=None,
    )
