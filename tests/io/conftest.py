"""Fixtures of the delira-io tests: the real image files that ship inside pydicom and nibabel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _nibabel_data() -> Path:
    spec = importlib.util.find_spec("nibabel")
    if spec is None or spec.origin is None:
        pytest.skip("nibabel is not installed (pip install 'delira-io[nifti]')")
    return Path(spec.origin).parent / "tests" / "data"


@pytest.fixture
def nibabel_file():
    """``nibabel_file("anatomical.nii")`` -> the path of a data file shipped with nibabel."""

    def find(name: str) -> Path:
        path = _nibabel_data() / name
        if not path.is_file():
            pytest.skip(f"{name} is not shipped with this nibabel version")
        return path

    return find


@pytest.fixture
def pydicom_file():
    """``pydicom_file("CT_small.dcm")`` -> the path of a test file shipped with pydicom."""
    pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom is not installed")

    def find(name: str) -> Path:
        return Path(pydicom_data.get_testdata_file(name))

    return find
