"""Import optional dependencies on first use, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# The import name of each optional dependency -> (distribution name, delira-io extra).
_EXTRAS: dict[str, tuple[str, str]] = {
    "nibabel": ("nibabel", "nifti"),
    "SimpleITK": ("SimpleITK", "itk"),
    "pydicom": ("pydicom", "dicom"),
    "PIL": ("pillow", "image"),
    "tifffile": ("tifffile", "image"),
    "safetensors": ("safetensors", "torch"),
    "torch": ("torch", "torch"),
    "tensorflow": ("tensorflow", "tf"),
    "keras": ("keras", "tf"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Args:
        module: import name, e.g. ``"nibabel"`` or ``"safetensors.torch"``.
        purpose: what needs it, for the message, e.g. ``"reading .nii.gz"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        dist, extra = _EXTRAS.get(top, (top, "all"))
        raise MissingDependencyError(
            f"{purpose} needs {dist}, which is not installed ({exc}): pip install 'delira-io[{extra}]'",
            name=top,
        ) from exc
