"""DICOM: single files against pydicom, series folders against SimpleITK's series reader."""

from __future__ import annotations

import numpy as np
import pytest

from delira.io import ImageReadError, read_image

pydicom = pytest.importorskip("pydicom")


def _modality_lut(ds) -> np.ndarray:
    """HU (or other modality units) by hand: stored * RescaleSlope + RescaleIntercept."""
    slope = float(ds.get("RescaleSlope", 1))
    intercept = float(ds.get("RescaleIntercept", 0))
    return ds.pixel_array.astype(np.float64) * slope + intercept


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_file_matches_pydicom(pydicom_file, name):
    path = pydicom_file(name)
    ds = pydicom.dcmread(str(path))
    image = read_image(path)
    assert image.array.shape == (ds.Columns, ds.Rows, 1)  # (x, y, z): x runs along a row
    np.testing.assert_array_equal(image.array[:, :, 0], _modality_lut(ds).T)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    assert image.spacing[:2] == (col_spacing, row_spacing)
    assert image.origin == tuple(float(v) for v in ds.ImagePositionPatient)
    iop = [float(v) for v in ds.ImageOrientationPatient]
    np.testing.assert_allclose(image.direction[:, 0], iop[:3])
    np.testing.assert_allclose(image.direction[:, 1], iop[3:])
    np.testing.assert_allclose(image.direction[:, 2], np.cross(iop[:3], iop[3:]))
    assert image.meta["format"] == "dicom"
    assert image.meta["Modality"] == ds.Modality


def test_ct_values_are_hounsfield_units_in_an_integer_dtype(pydicom_file):
    ds = pydicom.dcmread(str(pydicom_file("CT_small.dcm")))
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    image = read_image(pydicom_file("CT_small.dcm"))
    # signed 16-bit stored values shifted by -1024 do not fit int16: int32, like SimpleITK
    assert image.array.dtype == np.int32
    assert image.array.min() == ds.pixel_array.min() - 1024


def test_single_file_geometry_matches_simpleitk(pydicom_file):
    sitk = pytest.importorskip("SimpleITK")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        path = pydicom_file(name)
        reference = sitk.ReadImage(str(path))
        image = read_image(path)
        np.testing.assert_allclose(image.spacing, reference.GetSpacing())
        np.testing.assert_allclose(image.origin, reference.GetOrigin())
        np.testing.assert_allclose(image.direction.reshape(-1), reference.GetDirection())
        np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))


def test_truncated_file_raises_a_delira_error_naming_it(pydicom_file):
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "less than expected" in str(info.value)  # the cause, from pydicom


def test_dicom_without_extension_is_recognised(pydicom_file, tmp_path):
    target = tmp_path / "IM0001"
    target.write_bytes(pydicom_file("MR_small.dcm").read_bytes())
    np.testing.assert_array_equal(read_image(target).array, read_image(pydicom_file("MR_small.dcm")).array)


# --- series folders --------------------------------------------------------------------------------
def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _write_series(source, folder, n_slices=5, dz=2.5, tilt=0.0, series_uid=None, names=None):
    """Slices of CT_small with distinct pixels, positions along the slice normal, shuffled names."""
    folder.mkdir(exist_ok=True)
    template = pydicom.dcmread(str(source))
    rotation = _rotation_x(tilt)
    row, col = rotation @ [1.0, 0, 0], rotation @ [0, 1.0, 0]
    normal = np.cross(row, col)
    origin = np.array([float(v) for v in template.ImagePositionPatient])
    series_uid = series_uid or pydicom.uid.generate_uid()
    names = names or [f"slice_{i:02d}.dcm" for i in np.random.default_rng(1).permutation(n_slices)]
    for k in range(n_slices):
        ds = pydicom.dcmread(str(source))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in origin + k * dz * normal]
        pixels = ds.pixel_array.astype(np.int16) + np.int16(100 * k)
        ds.PixelData = pixels.tobytes()
        ds.save_as(str(folder / names[k]))
    (folder / "README.txt").write_text("not a DICOM file")
    return folder


@pytest.mark.parametrize("tilt", [0.0, 30.0])
def test_series_matches_simpleitk_series_reader(pydicom_file, tmp_path, tilt):
    sitk = pytest.importorskip("SimpleITK")
    folder = _write_series(pydicom_file("CT_small.dcm"), tmp_path / "series", tilt=tilt)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reference = reader.Execute()
    image = read_image(folder)
    assert image.array.shape == reference.GetSize() == (128, 128, 5)
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
    np.testing.assert_allclose(image.spacing, reference.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(image.origin, reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.direction.reshape(-1), reference.GetDirection(), atol=1e-6)
    assert image.meta["format"] == "dicom-series"


def test_series_is_sorted_by_position_not_by_file_name(pydicom_file, tmp_path):
    folder = _write_series(pydicom_file("CT_small.dcm"), tmp_path / "series", n_slices=4, dz=3.0)
    image = read_image(folder)
    ct = pydicom.dcmread(str(pydicom_file("CT_small.dcm")))
    hu = ct.pixel_array.astype(np.int64) - 1024
    for k in range(4):  # slice k was written with +100 k and at position k * dz
        np.testing.assert_array_equal(image.array[:, :, k], (hu + 100 * k).T)
    assert image.spacing[2] == pytest.approx(3.0, rel=1e-6)


def test_folder_with_two_series_says_so(pydicom_file, tmp_path):
    folder = tmp_path / "mixed"
    _write_series(pydicom_file("CT_small.dcm"), folder, n_slices=2, series_uid="1.2.3.1", names=["a1", "a2"])
    _write_series(pydicom_file("CT_small.dcm"), folder, n_slices=2, series_uid="1.2.3.2", names=["b1", "b2"])
    with pytest.raises(ImageReadError, match=r"2 DICOM series: 1\.2\.3\.1 .*1\.2\.3\.2.*own folder"):
        read_image(folder)


def test_folder_without_dicom_files_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ImageReadError, match="no DICOM image files"):
        read_image(tmp_path)


def test_truncated_slice_in_a_series_names_the_file(pydicom_file, tmp_path):
    folder = _write_series(pydicom_file("MR_small.dcm"), tmp_path / "series", n_slices=2)
    broken = sorted(folder.glob("*.dcm"))[0]
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # cuts into the pixel data
    with pytest.raises(ImageReadError, match=broken.name):
        read_image(folder)


@pytest.mark.parametrize("implicit_vr", [True, False])
def test_file_without_preamble_and_meta_header_is_read(pydicom_file, tmp_path, implicit_vr):
    ds = pydicom.dcmread(str(pydicom_file("MR_small.dcm")))
    reference = ds.pixel_array.copy()
    ds.preamble = None
    del ds.file_meta  # an old ACR-NEMA style file: bare data elements
    target = tmp_path / "old.dcm"
    pydicom.dcmwrite(str(target), ds, implicit_vr=implicit_vr, little_endian=True, enforce_file_format=False)
    assert target.read_bytes()[128:132] != b"DICM"
    image = read_image(target)
    np.testing.assert_array_equal(image.array[:, :, 0], reference.T)
    assert image.spacing[:2] == (0.3125, 0.3125)


def test_multi_frame_rgb_keeps_frames_as_z_and_samples_last(pydicom_file):
    path = pydicom_file("SC_rgb_rle_2frame.dcm")  # RLE-compressed, 2 frames of 100 x 100 RGB
    reference = pydicom.dcmread(str(path)).pixel_array  # (frames, rows, cols, samples)
    image = read_image(path)
    assert image.array.shape == (100, 100, 2, 3)
    np.testing.assert_array_equal(image.array, reference.transpose(2, 1, 0, 3))


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the test file's own UIDs
def test_rt_dose_frame_spacing_matches_simpleitk(pydicom_file):
    sitk = pytest.importorskip("SimpleITK")
    path = pydicom_file("rtdose.dcm")
    reference = sitk.ReadImage(str(path))
    image = read_image(path)
    np.testing.assert_allclose(image.spacing, reference.GetSpacing())  # z from GridFrameOffsetVector
    np.testing.assert_allclose(image.origin, reference.GetOrigin())
    np.testing.assert_array_equal(image.array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
