"""write_image: every writable format round-trips exactly, and writes what other readers expect."""

from __future__ import annotations

import numpy as np
import pytest

from delira.io import Image, ImageWriteError, read_image, write_image

ITK_EXTENSIONS = [".nrrd", ".nhdr", ".mha", ".mhd"]
VOLUME_EXTENSIONS = [".nii", ".nii.gz", *ITK_EXTENSIONS]

# A geometry every format stores exactly (values representable in float32): x along -y, y along +x.
FLIP = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
EXACT = {"spacing": (0.5, 0.75, 2.0), "origin": (-10.5, 20.25, 3.0), "direction": FLIP}


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    return q if np.linalg.det(q) > 0 else -q


def _volume(dtype, shape=(5, 6, 7), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _assert_same(read, written, atol=0.0):
    assert read.array.dtype == written.array.dtype
    np.testing.assert_array_equal(read.array, written.array)
    np.testing.assert_allclose(read.spacing, written.spacing, rtol=0, atol=atol)
    np.testing.assert_allclose(read.origin, written.origin, rtol=0, atol=atol)
    np.testing.assert_allclose(read.direction, written.direction, rtol=0, atol=atol)


@pytest.mark.parametrize("ext", VOLUME_EXTENSIONS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_volume_round_trip_is_exact(tmp_path, ext, dtype):
    if ext == ".nii" or ext == ".nii.gz":
        pytest.importorskip("nibabel")
    else:
        pytest.importorskip("SimpleITK")
    image = Image(_volume(dtype), **EXACT)
    write_image(tmp_path / f"x{ext}", image)
    _assert_same(read_image(tmp_path / f"x{ext}"), image)


@pytest.mark.parametrize("ext", VOLUME_EXTENSIONS)
def test_oblique_geometry_round_trip(tmp_path, ext):
    pytest.importorskip("nibabel" if ext.startswith(".nii") else "SimpleITK")
    image = Image(_volume(np.float32), (0.7, 1.3, 2.9), (-101.3, 12.7, 55.1), _rotation(3))
    write_image(tmp_path / f"x{ext}", image)
    # NIfTI stores the affine as float32; NRRD stores directions times spacing in text
    _assert_same(read_image(tmp_path / f"x{ext}"), image, atol=1e-4 if ext.startswith(".nii") else 1e-12)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_2d_round_trip(tmp_path, ext):
    pytest.importorskip("nibabel" if ext.startswith(".nii") else "SimpleITK")
    image = Image(
        _volume(np.int16, (9, 4)), spacing=(0.25, 4.0), origin=(1.5, -2.0), direction=[[0, -1], [1, 0]]
    )
    write_image(tmp_path / f"x{ext}", image)
    _assert_same(read_image(tmp_path / f"x{ext}"), image)


@pytest.mark.parametrize("ext", [".nii.gz", *ITK_EXTENSIONS])
def test_vector_components_round_trip(tmp_path, ext):
    pytest.importorskip("nibabel" if ext.startswith(".nii") else "SimpleITK")
    image = Image(_volume(np.float32, (4, 5, 6, 3)), **EXACT)
    write_image(tmp_path / f"x{ext}", image)
    _assert_same(read_image(tmp_path / f"x{ext}"), image)


def test_nifti_written_is_what_nibabel_expects(tmp_path):
    nib = pytest.importorskip("nibabel")
    image = Image(_volume(np.int16), **EXACT)
    write_image(tmp_path / "x.nii.gz", image)
    reference = nib.load(str(tmp_path / "x.nii.gz"))
    np.testing.assert_array_equal(np.asarray(reference.dataobj), image.array)
    # by hand: in LPS the x axis is 0.5 * (0, -1, 0), the y axis 0.75 * (1, 0, 0), the z axis
    # 2 * (0, 0, 1), the origin (-10.5, 20.25, 3); RAS negates the first two world coordinates.
    expected = np.array(
        [
            [0.0, -0.75, 0.0, 10.5],
            [0.5, 0.0, 0.0, -20.25],
            [0.0, 0.0, 2.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(reference.affine, expected, atol=1e-7)
    assert int(reference.header["sform_code"]) == 1 and int(reference.header["qform_code"]) == 1


def test_itk_file_written_is_what_simpleitk_expects(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    image = Image(_volume(np.int16), **EXACT)
    write_image(tmp_path / "x.mha", image)
    reference = sitk.ReadImage(str(tmp_path / "x.mha"))
    assert reference.GetSize() == (5, 6, 7)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reference), image.array.transpose(2, 1, 0))
    assert reference.GetSpacing() == EXACT["spacing"]
    assert reference.GetOrigin() == EXACT["origin"]
    assert reference.GetDirection() == tuple(FLIP.reshape(-1))


@pytest.mark.parametrize(("name", "ext"), [("anatomical.nii", ".nrrd"), ("example4d.nii.gz", ".nii.gz")])
def test_real_file_survives_a_round_trip(nibabel_file, tmp_path, name, ext):
    pytest.importorskip("SimpleITK")
    original = read_image(nibabel_file(name))
    write_image(tmp_path / f"copy{ext}", original)
    _assert_same(read_image(tmp_path / f"copy{ext}"), original, atol=1e-9)


def test_ct_slice_survives_a_round_trip(pydicom_file, tmp_path):
    pytest.importorskip("SimpleITK")
    original = read_image(pydicom_file("CT_small.dcm"))
    for ext in (".nii.gz", ".mha"):
        write_image(tmp_path / f"ct{ext}", original)
        _assert_same(read_image(tmp_path / f"ct{ext}"), original, atol=1e-5 if ext == ".nii.gz" else 0)


# --- PNG and TIFF ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.uint8).reshape(3, 4),
        np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3),
        np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4),
        (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4),
    ],
    ids=["gray8", "rgb", "rgba", "gray16"],
)
def test_png_round_trip_and_axis_order(tmp_path, array):
    pil = pytest.importorskip("PIL.Image")
    write_image(tmp_path / "x.png", Image(array, spacing=(1.0, 1.0)))
    # PIL reads (row, col): our (x, y) transposed
    np.testing.assert_array_equal(np.asarray(pil.open(tmp_path / "x.png")), np.swapaxes(array, 0, 1))
    read = read_image(tmp_path / "x.png")
    assert read.array.dtype == array.dtype
    np.testing.assert_array_equal(read.array, array)


def test_png_written_by_pillow_reads_transposed(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rows_cols = np.array([[0, 10, 20], [30, 40, 50]], dtype=np.uint8)  # 2 rows, 3 columns
    pil.fromarray(rows_cols).save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.array.shape == (3, 2)  # (x = column, y = row)
    assert image.array[2, 0] == 20  # x = 2 (third column), y = 0 (first row)
    assert image.spacing == (1.0, 1.0)


@pytest.mark.parametrize(
    ("array", "spacing"),
    [
        (np.arange(12, dtype=np.float32).reshape(3, 4), (1.0, 1.0)),
        (np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3), (1.0, 1.0)),
        (np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4), (1.0, 1.0, 1.0)),
    ],
    ids=["float2d", "rgb", "stack3d"],
)
def test_tiff_round_trip_and_axis_order(tmp_path, array, spacing):
    tifffile = pytest.importorskip("tifffile")
    write_image(tmp_path / "x.tif", Image(array, spacing=spacing))
    ndim = len(spacing)
    spatial_reversed = tuple(range(ndim))[::-1] + tuple(range(ndim, array.ndim))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "x.tif"), array.transpose(spatial_reversed))
    read = read_image(tmp_path / "x.tif")
    assert read.ndim == ndim
    assert read.array.dtype == array.dtype
    np.testing.assert_array_equal(read.array, array)


def test_png_refuses_to_drop_geometry_unless_asked(tmp_path):
    pytest.importorskip("PIL.Image")
    image = Image(np.zeros((4, 4), np.uint8), spacing=(0.5, 0.5))
    with pytest.raises(ImageWriteError, match=r"PNG cannot store the geometry.*allow_geometry_loss=True"):
        write_image(tmp_path / "x.png", image)
    assert not (tmp_path / "x.png").exists()
    write_image(tmp_path / "x.png", image, allow_geometry_loss=True)
    assert read_image(tmp_path / "x.png").spacing == (1.0, 1.0)


def test_png_rejects_float_pixels_with_a_fix(tmp_path):
    pytest.importorskip("PIL.Image")
    with pytest.raises(ImageWriteError, match=r"uint8.*float32.*\.tif"):
        write_image(tmp_path / "x.png", Image(np.zeros((4, 4), np.float32)))


@pytest.mark.parametrize("name", ["x.dcm", "x.jpg", "x"])
def test_unwritable_extension_lists_the_writable_ones(tmp_path, name):
    with pytest.raises(ImageWriteError, match=r"writable are \.nii, \.nii\.gz, \.nrrd"):
        write_image(tmp_path / name, Image(np.zeros((2, 2, 2))))


def test_itk_rejects_two_extra_axes(tmp_path):
    pytest.importorskip("SimpleITK")
    with pytest.raises(ImageWriteError, match="at most one non-spatial axis"):
        write_image(tmp_path / "x.nrrd", Image(np.zeros((2, 2, 2, 2, 2)), spacing=(1, 1, 1)))
