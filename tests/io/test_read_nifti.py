"""NIfTI: arrays and geometry against what nibabel and SimpleITK read from the same files."""

from __future__ import annotations

import numpy as np
import pytest

from delira.io import read_image

nib = pytest.importorskip("nibabel")

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_array_matches_nibabel(nibabel_file, name):
    path = nibabel_file(name)
    reference = nib.load(str(path))
    image = read_image(path)
    np.testing.assert_array_equal(image.array, reference.get_fdata())
    assert image.array.shape == reference.shape
    assert image.array.dtype == reference.get_data_dtype().newbyteorder("=")  # unscaled: stored dtype
    assert image.meta["format"] == "nifti"


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_geometry_is_nibabels_affine_in_lps(nibabel_file, name):
    path = nibabel_file(name)
    lps = RAS_TO_LPS @ nib.load(str(path)).affine
    image = read_image(path)
    np.testing.assert_allclose(image.affine, lps, rtol=0, atol=1e-9)
    # spacing: the voxel sizes nibabel reports (from the same affine)
    np.testing.assert_allclose(image.spacing, nib.load(str(path)).header.get_zooms()[:3], rtol=1e-6)


def test_anatomical_geometry_by_hand(nibabel_file):
    # anatomical.nii: RAS affine [[-2, 0, 0, 32], [0, 2, 0, -40], [0, 0, 2, -16]]; in LPS the
    # x axis points to +L, the y axis to -P and the origin is (-32, 40, -16).
    image = read_image(nibabel_file("anatomical.nii"))
    assert image.spacing == (2.0, 2.0, 2.0)
    assert image.origin == (-32.0, 40.0, -16.0)
    np.testing.assert_array_equal(image.direction, np.diag([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_geometry_matches_simpleitk(nibabel_file, name):
    sitk = pytest.importorskip("SimpleITK")
    path = nibabel_file(name)
    reference = sitk.ReadImage(str(path))
    n = reference.GetDimension()
    image = read_image(path)
    np.testing.assert_allclose(image.spacing, reference.GetSpacing()[:3], rtol=1e-6)
    np.testing.assert_allclose(image.origin, reference.GetOrigin()[:3], atol=1e-5)
    direction = np.asarray(reference.GetDirection()).reshape(n, n)[:3, :3]
    np.testing.assert_allclose(image.direction, direction, atol=1e-6)
    # ITK arrays are (t, z, y, x); ours (x, y, z, t)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference).transpose(range(n)[::-1]))


def test_time_axis_comes_after_the_spatial_axes(nibabel_file):
    image = read_image(nibabel_file("example4d.nii.gz"))
    assert image.ndim == 3
    assert image.array.shape == (128, 96, 24, 2)
    assert len(image.spacing) == len(image.origin) == 3
