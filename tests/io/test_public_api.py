"""The public API of delira.io and its import-time cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import delira.io as dio

HEAVY = [
    "torch",
    "tensorflow",
    "keras",
    "nibabel",
    "SimpleITK",
    "pydicom",
    "PIL",
    "tifffile",
    "safetensors",
    "onnx",
    "onnxruntime",
]


def test_import_loads_no_framework_and_no_reader():
    code = (
        f"import sys, delira.io; print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_public_names():
    for name in (
        "Image",
        "read_image",
        "write_image",
        "save_checkpoint",
        "load_checkpoint",
        "read_checkpoint_info",
        "export_torchscript",
        "export_onnx",
        "export_saved_model",
        "DeliraIOError",
        "CheckpointError",
        "ImageReadError",
    ):
        assert name in dio.__all__ and getattr(dio, name)
    assert all(hasattr(dio, name) for name in dio.__all__)


@pytest.mark.parametrize(
    "error",
    [
        dio.CheckpointError,
        dio.CheckpointFormatError,
        dio.CheckpointMismatchError,
        dio.CheckpointNotFoundError,
        dio.ImageReadError,
        dio.ImageNotFoundError,
        dio.ImageWriteError,
        dio.ExportError,
        dio.MissingDependencyError,
    ],
)
def test_every_error_is_a_delira_io_error(error):
    assert issubclass(error, dio.DeliraIOError)


def test_builtin_counterparts():
    assert issubclass(dio.ImageNotFoundError, FileNotFoundError)
    assert issubclass(dio.CheckpointNotFoundError, FileNotFoundError)
    assert issubclass(dio.MissingDependencyError, ImportError)
    assert issubclass(dio.ImageNotFoundError, dio.ImageReadError)


def test_supported_formats_lists_extensions_and_extras():
    formats = dio.supported_formats()
    assert formats["NIfTI"] == {"extensions": (".nii", ".nii.gz"), "writable": True, "extra": "nifti"}
    assert formats["DICOM"]["writable"] is False and formats["DICOM"]["extra"] == "dicom"
    assert set(formats) == {"NIfTI", "NRRD", "MetaImage", "DICOM", "PNG", "TIFF"}


@pytest.mark.torch
def test_missing_safetensors_names_the_extras(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    dio.save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(1, 1))
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(dio.MissingDependencyError, match=r"safetensors.*delira-io\[torch\].*delira-io\[tf\]"):
        dio.load_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(1, 1))
