"""Import optional dependencies on first use, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# The import name of each optional dependency -> (distribution name, how to install it).
_EXTRAS: dict[str, tuple[str, str]] = {
    "nibabel": ("nibabel", "pip install 'delira-io[nifti]'"),
    "SimpleITK": ("SimpleITK", "pip install 'delira-io[itk]'"),
    "pydicom": ("pydicom", "pip install 'delira-io[dicom]'"),
    "PIL": ("pillow", "pip install 'delira-io[image]'"),
    "tifffile": ("tifffile", "pip install 'delira-io[image]'"),
    "safetensors": ("safetensors", "pip install 'delira-io[torch]' (or 'delira-io[tf]' for Keras)"),
    "torch": ("torch", "pip install 'delira-io[torch]'"),
    "tensorflow": ("tensorflow", "pip install 'delira-io[tf]'"),
    "keras": ("keras", "pip install 'delira-io[tf]'"),
    "onnx": ("onnx", "pip install 'delira-io[onnx]'"),
    "onnxruntime": ("onnxruntime", "pip install 'delira-io[onnx]'"),
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
        dist, how = _EXTRAS.get(top, (top, "pip install 'delira-io[all]'"))
        raise MissingDependencyError(
            f"{purpose} needs {dist}, which is not installed: {how} ({type(exc).__name__}: {exc})",
            name=top,
        ) from exc
