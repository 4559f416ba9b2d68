"""read_image failures: missing files, unsupported extensions, corrupt files, missing readers."""

from __future__ import annotations

import gzip
import sys

import numpy as np
import pytest

from delira.io import (
    DeliraIOError,
    Image,
    ImageNotFoundError,
    ImageReadError,
    MissingDependencyError,
    read_image,
    write_image,
)


def test_missing_file_names_it_and_is_a_file_not_found_error(tmp_path):
    path = tmp_path / "nowhere" / "scan.nii.gz"
    with pytest.raises(ImageNotFoundError, match=r"scan\.nii\.gz") as info:
        read_image(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, DeliraIOError)


def test_unsupported_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "scan.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert "'.jpg' is not supported" in message
    for ext in (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".tif", ".tiff"):
        assert ext in message


GARBAGE = bytes(range(256)) * 8


@pytest.mark.parametrize("name", ["x.nii", "x.nii.gz", "x.nrrd", "x.mha", "x.dcm", "x.png", "x.tif"])
def test_corrupt_file_raises_a_delira_error_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(GARBAGE)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None  # the reader's own exception is kept as the cause


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha", ".png", ".tif"])
def test_truncated_file_raises_a_delira_error_naming_it(tmp_path, ext):
    pytest.importorskip(
        "nibabel" if ext.startswith(".nii") else "SimpleITK" if ext in (".nrrd", ".mha") else "PIL"
    )
    pytest.importorskip("tifffile")
    array = np.arange(40 * 30, dtype=np.uint8).reshape(40, 30) if ext in (".png", ".tif") else None
    image = (
        Image(array) if array is not None else Image(np.arange(8000, dtype=np.float32).reshape(20, 20, 20))
    )
    path = tmp_path / f"x{ext}"
    write_image(path, image)
    _truncate(path, 0.6)
    with pytest.raises(ImageReadError, match=str(path).replace(".", r"\.")):
        read_image(path)


def test_gzip_of_garbage_is_a_delira_error(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(GARBAGE))
    with pytest.raises(ImageReadError, match=r"x\.nii\.gz"):
        read_image(path)


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("x.nii.gz", "nibabel", "nifti"),
        ("x.nrrd", "SimpleITK", "itk"),
        ("x.dcm", "pydicom", "dicom"),
        ("x.png", "PIL.Image", "image"),
        ("x.tiff", "tifffile", "image"),
    ],
)
def test_missing_reader_names_the_extra(tmp_path, monkeypatch, name, module, extra):
    path = tmp_path / name
    path.write_bytes(GARBAGE)
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependencyError, match=rf"pip install 'delira-io\[{extra}\]'") as info:
        read_image(path)
    assert isinstance(info.value, ImportError)
    assert name in str(info.value)


def test_missing_writer_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(MissingDependencyError, match=r"SimpleITK.*delira-io\[itk\]"):
        write_image(tmp_path / "x.mha", Image(np.zeros((2, 2, 2))))
