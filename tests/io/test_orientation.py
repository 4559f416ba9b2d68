"""Orientation codes and reorientation, against nibabel (as_closest_canonical, aff2axcodes,
as_reoriented) and SimpleITK (DICOMOrient), on nibabel's and pydicom's test files and on synthetic
affines with all 48 axis permutations and flips."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from delira.io import (
    Image,
    OrientationTransform,
    orientation_codes,
    orientation_transform,
    read_image,
    reorient,
    write_image,
)

nib = pytest.importorskip("nibabel", reason="nibabel is not installed (pip install 'delira-io[nifti]')")
from nibabel import orientations as nio  # noqa: E402

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIBABEL_FILES = [
    "anatomical.nii",  # x flipped (LAS)
    "functional.nii",  # LAS, 4D
    "example4d.nii.gz",  # oblique, 4D
    "example_nifti2.nii.gz",  # NIfTI-2, oblique
    "standard.nii.gz",  # already RAS
    "reoriented_anat_moved.nii",  # RAS, float32 big-endian
]
# every signed permutation of the three axes: 6 permutations x 8 sign patterns
SIGNED_PERMUTATIONS = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3)
]


def _rotation(degrees: float, axis: int) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    out = np.eye(3)
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


def _ras_affine(perm, signs, oblique: bool) -> np.ndarray:
    """A RAS affine whose array axis k runs along world axis perm[k] with sign signs[k]."""
    linear = np.zeros((3, 3))
    for k, (w, s) in enumerate(zip(perm, signs)):
        linear[w, k] = s
    linear = linear @ np.diag([0.7, 1.3, 2.9])
    if oblique:
        linear = _rotation(12.0, 0) @ _rotation(-9.0, 2) @ linear
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, (-11.5, 27.25, 3.125)
    return affine


def _nibabel_codes(affine) -> str:
    return "".join(nib.aff2axcodes(affine))


def _nibabel_reoriented(img, code: str):
    """nibabel's own reorientation of ``img`` to ``code`` (as_closest_canonical for RAS)."""
    if code == "RAS":
        return nib.as_closest_canonical(img)
    ornt = nio.ornt_transform(nio.io_orientation(img.affine), nio.axcodes2ornt(tuple(code)))
    return img.as_reoriented(ornt)


def _world(affine: np.ndarray, index) -> np.ndarray:
    return (np.asarray(affine) @ np.array([*index, 1.0]))[:3]


# -- codes ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_codes_of_nibabel_files_are_aff2axcodes(nibabel_file, name):
    path = nibabel_file(name)
    assert orientation_codes(read_image(path)) == _nibabel_codes(nib.load(str(path)).affine)


def test_identity_direction_is_lps_and_the_nifti_identity_is_ras():
    assert orientation_codes(np.eye(3)) == "LPS"
    assert orientation_codes(np.diag([-1.0, -1.0, 1.0])) == "RAS"
    assert orientation_codes(Image(np.zeros((2, 3)))) == "LP"  # 2D: no S/I axis


@pytest.mark.parametrize("oblique", [False, True])
def test_codes_of_all_signed_permutations_match_nibabel_and_simpleitk(oblique):
    sitk = pytest.importorskip("SimpleITK") if not oblique else None
    for perm, signs in SIGNED_PERMUTATIONS:
        affine = _ras_affine(perm, signs, oblique)
        lps = RAS_TO_LPS[:3, :3] @ affine[:3, :3]
        direction = lps / np.linalg.norm(lps, axis=0)
        codes = orientation_codes(direction)
        assert codes == _nibabel_codes(affine), (perm, signs)
        if sitk is not None:  # SimpleITK names axes the DICOM way too (identity: "LPS")
            expected = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
                direction.ravel().tolist()
            )
            assert codes == expected, (perm, signs)


# -- reorientation against nibabel ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_read_as_ras_is_as_closest_canonical(nibabel_file, name):
    path = nibabel_file(name)
    img = nib.load(str(path))
    canonical = nib.as_closest_canonical(img)
    stored = read_image(path)
    image = read_image(path, orientation="RAS")
    np.testing.assert_array_equal(image.array, canonical.get_fdata())  # same (x, y, z, *extra) axes
    assert image.array.dtype == stored.array.dtype and image.array.flags.c_contiguous
    np.testing.assert_allclose(RAS_TO_LPS @ image.affine, canonical.affine, rtol=0, atol=1e-9)
    np.testing.assert_allclose(image.meta["ras_affine"], canonical.affine, rtol=0, atol=1e-9)
    assert orientation_codes(image) == "RAS"
    record = image.meta["orientation"]
    assert isinstance(record, OrientationTransform)
    assert (record.source, record.target) == (_nibabel_codes(img.affine), "RAS")


@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("target", ["RAS", "LPS", "PIR"])
def test_all_signed_permutations_match_nibabel(tmp_path, oblique, target):
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)  # every voxel value unique
    corners = list(itertools.product(*[(0, n - 1) for n in data.shape]))
    for i, (perm, signs) in enumerate(SIGNED_PERMUTATIONS):
        path = tmp_path / f"case_{i}.nii.gz"
        nib.save(nib.Nifti1Image(data, _ras_affine(perm, signs, oblique)), str(path))
        img = nib.load(str(path))
        expected = _nibabel_reoriented(img, target)
        image = read_image(path, orientation=target)
        np.testing.assert_array_equal(image.array, expected.get_fdata(), err_msg=str((perm, signs)))
        np.testing.assert_allclose(RAS_TO_LPS @ image.affine, expected.affine, rtol=0, atol=1e-9)
        assert orientation_codes(image) == target == _nibabel_codes(expected.affine)
        # every corner voxel (found by its unique value) keeps its world position
        for corner in corners:
            (new_index,) = np.argwhere(image.array == data[corner])
            np.testing.assert_allclose(
                _world(image.affine, new_index), _world(RAS_TO_LPS @ img.affine, corner), rtol=0, atol=1e-9
            )


@pytest.mark.parametrize("target", ["LPS", "RAS", "PIL", "SAR"])
def test_reorient_matches_simpleitk_dicomorient(target):
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(3)
    for perm, signs in SIGNED_PERMUTATIONS[::5]:
        direction = np.zeros((3, 3))
        for k, (w, s) in enumerate(zip(perm, signs)):
            direction[w, k] = s
        image = Image(rng.random((3, 4, 5)), (0.5, 1.5, 2.5), (4.0, -2.0, 7.5), direction)
        reference = sitk.GetImageFromArray(image.array.transpose(2, 1, 0))
        reference.SetSpacing(image.spacing)
        reference.SetOrigin(image.origin)
        reference.SetDirection(direction.ravel().tolist())
        reference = sitk.DICOMOrient(reference, target)
        out = reorient(image, target)
        np.testing.assert_array_equal(out.array, sitk.GetArrayFromImage(reference).transpose(2, 1, 0))
        np.testing.assert_allclose(out.spacing, reference.GetSpacing(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(out.origin, reference.GetOrigin(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(out.direction.ravel(), reference.GetDirection(), rtol=0, atol=1e-12)


def test_two_dimensional_image_by_hand():
    array = np.arange(6).reshape(2, 3)  # identity direction: "LP"
    image = Image(array, (0.5, 2.0), (10.0, 20.0))
    out = reorient(image, "RAS")  # 2D: "RA"
    np.testing.assert_array_equal(out.array, array[::-1, ::-1])
    assert out.origin == (10.5, 24.0) and out.spacing == (0.5, 2.0)
    np.testing.assert_array_equal(out.direction, -np.eye(2))
    assert orientation_codes(out) == "RA"
    swapped = reorient(image, "PL")
    np.testing.assert_array_equal(swapped.array, array.T)


# -- inverse ------------------------------------------------------------------------------------------------
def test_roundtrip_is_bit_exact_for_every_signed_permutation():
    rng = np.random.default_rng(0)
    array = rng.standard_normal((3, 4, 5, 2))  # an extra (time) axis stays last
    for perm, signs in SIGNED_PERMUTATIONS:
        affine = _ras_affine(perm, signs, oblique=True)
        lps = RAS_TO_LPS @ affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        image = Image(array, spacing, lps[:3, 3], lps[:3, :3] / spacing)
        for target in ("RAS", "LPS", "IPL"):
            out = reorient(image, target)
            record = OrientationTransform.from_dict(json.loads(json.dumps(out.meta["orientation"].to_dict())))
            assert record == out.meta["orientation"]
            back = record.invert(out)
            assert back.array.dtype == array.dtype
            np.testing.assert_array_equal(back.array, array)
            assert back.spacing == image.spacing
            np.testing.assert_array_equal(back.direction, image.direction)
            np.testing.assert_allclose(back.origin, image.origin, rtol=0, atol=1e-12)
            assert "orientation" not in back.meta
            np.testing.assert_array_equal(record.invert_array(record.apply_array(array)), array)


def test_transform_chaining_and_inverse():
    image = Image(np.arange(24.0).reshape(2, 3, 4), direction=np.diag([1.0, -1.0, -1.0]))
    first = orientation_transform(image, "SRA")
    middle = first.apply(image)
    second = orientation_transform(middle, "LPS")
    both = first.then(second)
    np.testing.assert_array_equal(both.apply_array(image.array), second.apply_array(middle.array))
    assert middle.meta["orientation"] == first
    assert reorient(middle, "LPS").meta["orientation"] == both  # the record chains to the file's layout
    assert first.then(first.inverse()).is_identity
    assert (both.source, both.target) == ("LAI", "LPS")
    with pytest.raises(ValueError, match="cannot chain"):
        first.then(first)


def test_prediction_on_a_canonical_grid_goes_back_to_the_stored_layout(nibabel_file):
    path = nibabel_file("anatomical.nii")
    stored = read_image(path)
    canonical = read_image(path, orientation="RAS")
    labels = (canonical.array > np.median(canonical.array)).astype(np.uint8)[None]  # (1, x, y, z)
    back = canonical.meta["orientation"].invert_array(labels, axis=1)
    np.testing.assert_array_equal(back[0], (stored.array > np.median(stored.array)).astype(np.uint8))


# -- write back --------------------------------------------------------------------------------------------
def test_write_original_restores_the_file_layout(nibabel_file, tmp_path):
    source = nib.load(str(nibabel_file("example4d.nii.gz")))
    image = read_image(nibabel_file("example4d.nii.gz"), orientation="RAS")
    write_image(tmp_path / "back.nii.gz", image, orientation="original")
    back = nib.load(str(tmp_path / "back.nii.gz"))
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(source.dataobj))
    np.testing.assert_allclose(back.affine, source.affine, rtol=0, atol=1e-4)  # float32 storage
    # a label map made on the canonical grid, written with the transform of its image
    label = Image((image.array[..., 0] > 0).astype(np.uint8), image.spacing, image.origin, image.direction)
    write_image(tmp_path / "label.nii.gz", label, orientation=image.meta["orientation"])
    written = nib.load(str(tmp_path / "label.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(source.dataobj)[..., 0] > 0)
    np.testing.assert_allclose(written.affine, source.affine, rtol=0, atol=1e-4)


def test_write_in_another_orientation_keeps_the_world(nibabel_file, tmp_path):
    source = nib.load(str(nibabel_file("anatomical.nii")))
    write_image(tmp_path / "lps.nii.gz", read_image(nibabel_file("anatomical.nii")), orientation="LPS")
    written = nib.load(str(tmp_path / "lps.nii.gz"))
    assert _nibabel_codes(written.affine) == "LPS"
    a, b = nib.as_closest_canonical(written), nib.as_closest_canonical(source)
    np.testing.assert_array_equal(a.get_fdata(), b.get_fdata())
    np.testing.assert_allclose(a.affine, b.affine, rtol=0, atol=1e-5)


# -- DICOM ---------------------------------------------------------------------------------------------------
def _letters_by_hand(vectors) -> str:
    """The DICOM letter each LPS unit vector points to (largest component, its sign)."""
    out = ""
    for v in vectors:
        w = int(np.argmax(np.abs(v)))
        out += ("LPS" if v[w] > 0 else "RAI")[w]
    return out


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_codes_from_the_header(pydicom_file, name):
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(str(pydicom_file(name)))
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    expected = _letters_by_hand([iop[:3], iop[3:], np.cross(iop[:3], iop[3:])])
    assert orientation_codes(read_image(pydicom_file(name))) == expected == "LPS"


@pytest.mark.parametrize(
    "row, col",
    [
        ((0, 1, 0), (0, 0, -1)),  # sagittal
        ((1, 0, 0), (0, 0, -1)),  # coronal
        ((-1, 0, 0), (0, -1, 0)),  # axial, rotated 180 degrees
        ((0.96, 0.28, 0), (0, 0.1, -0.995)),  # oblique, mostly coronal
    ],
)
def test_dicom_reads_give_consistent_codes(pydicom_file, tmp_path, row, col):
    pydicom = pytest.importorskip("pydicom")
    sitk = pytest.importorskip("SimpleITK")
    row, col = np.asarray(row, float), np.asarray(col, float)
    row /= np.linalg.norm(row)
    col -= row * (row @ col)
    col /= np.linalg.norm(col)
    ds = pydicom.dcmread(str(pydicom_file("MR_small.dcm")))
    ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row, *col)]
    path = tmp_path / "slice.dcm"
    ds.save_as(str(path))
    image = read_image(path)
    expected = _letters_by_hand([row, col, np.cross(row, col)])
    reference = sitk.ReadImage(str(path))
    assert orientation_codes(image) == expected
    assert expected == sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        reference.GetDirection()
    )
    for target in ("RAS", "LPS"):
        out = read_image(path, orientation=target)
        assert orientation_codes(out) == target
        expected_array = sitk.GetArrayFromImage(sitk.DICOMOrient(reference, target)).transpose(2, 1, 0)
        np.testing.assert_array_equal(out.array, expected_array)


# -- errors --------------------------------------------------------------------------------------------------
def test_bad_codes_say_what_to_give(nibabel_file):
    image = Image(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"'RAX'.*unknown letter.*one of L/R, one of P/A, one of S/I.*'RAS'"):
        reorient(image, "RAX")
    with pytest.raises(ValueError, match="exactly once"):
        reorient(image, "RLS")
    with pytest.raises(ValueError, match="2 letters"):
        reorient(image, "RA")
    with pytest.raises(TypeError, match="orientation must be"):
        reorient(image, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'RSS'"):
        read_image(nibabel_file("anatomical.nii"), orientation="RSS")
    with pytest.raises(TypeError, match=r"reorient expects a delira\.io\.Image"):
        reorient(np.zeros((2, 3, 4)), "RAS")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape is required"):
        orientation_transform(np.eye(3), "RAS")


def test_write_original_without_a_record_and_transforms_of_another_grid(tmp_path):
    image = Image(np.zeros((2, 3, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"no such record.*orientation=None"):
        write_image(tmp_path / "a.nii.gz", image, orientation="original")
    other = orientation_transform(np.eye(3), "RAS", shape=(4, 3, 2))
    with pytest.raises(ValueError, match=r"spatial shape \(2, 3, 4\)"):
        write_image(tmp_path / "a.nii.gz", image, orientation=other)
    with pytest.raises(ValueError, match=r"spatial shape \(2, 3, 4\) \(axes 1\.\.3"):
        other.invert_array(np.zeros((1, 2, 3, 4)), axis=1)
    with pytest.raises(ValueError, match="permutation"):
        OrientationTransform((0, 0, 1), (False,) * 3, (2, 2, 2))
    with pytest.raises(ValueError, match=r"lacks \['flip'\]"):
        OrientationTransform.from_dict({"perm": [0, 1, 2], "shape": [1, 1, 1]})
