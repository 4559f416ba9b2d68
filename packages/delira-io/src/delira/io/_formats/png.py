"""PNG through Pillow: 2D, grayscale or RGB(A), 8 or 16 bit. PNG stores no geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._image import Image
from .._optional import require
from ..errors import ImageWriteError


def _plain_info(info: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in info.items()}


def read(path: Path) -> Image:
    """Read a PNG: ``array`` is ``(X, Y)`` or ``(X, Y, C)`` (PIL's ``(row, col)`` transposed).

    Palette images are expanded to RGB(A); 16-bit grayscale stays uint16; spacing is 1.
    """
    pil = require("PIL.Image", f"reading {path.name}")
    with pil.open(str(path)) as img:
        img.load()
        mode = img.mode
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode == "1":
            img = img.convert("L")
        pixels = np.asarray(img)
        meta = _plain_info(img.info)
    meta["format"] = "png"
    meta["mode"] = mode
    array = pixels.transpose((1, 0, *range(2, pixels.ndim)))
    return Image(array, (1.0, 1.0), (0.0, 0.0), np.eye(2), meta)


def write(path: Path, image: Image) -> None:
    """Write a 2D image: uint8 with 1, 2 (gray + alpha), 3 or 4 channels, or uint16 / bool grayscale."""
    pil = require("PIL.Image", f"writing {path.name}")
    array = image.array
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if image.ndim != 2 or channels == 0 or channels > 4:
        raise ImageWriteError(
            f"PNG stores 2D images with 1 to 4 channels, shape (X, Y) or (X, Y, C); got shape "
            f"{array.shape} with {image.ndim} spatial axes. Write .tif/.nii.gz/.nrrd for other shapes"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    supported = array.dtype == np.uint8 or (array.dtype == np.uint16 and array.ndim == 2)
    if not supported:
        raise ImageWriteError(
            f"PNG stores uint8 (1-4 channels) or uint16 (grayscale) pixels; got {array.dtype} with "
            f"shape {image.array.shape}. Convert the array (e.g. np.clip(a, 0, 255).astype(np.uint8)) "
            "or write .tif / .nii.gz, which keep any dtype"
        )
    rows_cols = np.ascontiguousarray(array.transpose((1, 0, *range(2, array.ndim))))
    pil.fromarray(rows_cols).save(str(path), format="PNG")
