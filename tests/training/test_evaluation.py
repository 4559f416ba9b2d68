"""Evaluation metrics against a brute-force reference (neighbour test + scipy cdist in mm) and
hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from delira.training import evaluation as ev


# --- independent reference ------------------------------------------------------------------------
def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the array = background)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for start in (0, 2):  # the neighbour before and the one after along this axis
            index = [slice(1, 1 + n) for n in mask.shape]
            index[axis] = slice(start, start + mask.shape[axis])
            interior &= padded[tuple(index)]
    return mask & ~interior


def _brute_distances(a: np.ndarray, b: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    pa = np.argwhere(_brute_surface(a)) * np.asarray(spacing, float)
    pb = np.argwhere(_brute_surface(b)) * np.asarray(spacing, float)
    d = cdist(pa, pb)
    return d.min(axis=1), d.min(axis=0)


def _brute_hd95(a, b, spacing) -> float:
    da, db = _brute_distances(a, b, spacing)
    return float(np.percentile(np.concatenate([da, db]), 95))


def _brute_nsd(a, b, spacing, tol) -> float:
    """Share of both surfaces within ``tol`` mm; like the documented convention, a distance within
    1e-9 mm of the tolerance (round-off of ``k * spacing``) counts as inside."""
    da, db = _brute_distances(a, b, spacing)
    tol = tol + 1e-9
    return (np.count_nonzero(da <= tol) + np.count_nonzero(db <= tol)) / (da.size + db.size)


def _sphere(shape, centre, radius_mm, spacing) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius_mm**2


def _cases():
    rng = np.random.default_rng(7)
    random_3d = (rng.random((14, 12, 10)) < 0.25, rng.random((14, 12, 10)) < 0.25, (0.7, 0.7, 3.0))
    random_2d = (rng.random((30, 25)) < 0.3, rng.random((30, 25)) < 0.3, (0.5, 1.3))
    sp = (0.7, 0.7, 3.0)
    spheres = (
        _sphere((32, 32, 12), (11.0, 11.0, 15.0), 7.0, sp),
        _sphere((32, 32, 12), (12.5, 10.0, 18.0), 6.0, sp),
        sp,
    )
    discs = (
        _sphere((40, 40), (15.0, 15.0), 9.0, (1.0, 1.0)),
        _sphere((40, 40), (18.0, 14.0), 11.0, (1.0, 1.0)),
        (1.0, 1.0),
    )
    return {"random_3d": random_3d, "random_2d": random_2d, "spheres": spheres, "discs": discs}


@pytest.mark.parametrize("name", ["random_3d", "random_2d", "spheres", "discs"])
def test_surface_distances_hd95_nsd_match_brute_force(name):
    a, b, spacing = _cases()[name]
    d_ab, d_ba = ev.surface_distances(a, b, spacing)
    ref_ab, ref_ba = _brute_distances(a, b, spacing)
    np.testing.assert_allclose(d_ab, ref_ab, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d_ba, ref_ba, rtol=1e-12, atol=1e-12)
    assert ev.hausdorff95(a, b, spacing) == pytest.approx(_brute_hd95(a, b, spacing), rel=1e-12)
    for tol in (0.5, 1.5, 4.0):
        assert ev.normalized_surface_dice(a, b, spacing, tol) == pytest.approx(_brute_nsd(a, b, spacing, tol))


def test_small_structure_in_a_large_volume():
    """The joint bounding box crop must not change distances, also for masks at the array border."""
    a = np.zeros((40, 40, 20), bool)
    b = np.zeros((40, 40, 20), bool)
    a[0:5, 30:40, 3:6] = True  # touches two faces of the array
    b[2:8, 33:40, 4:9] = True
    spacing = (0.8, 0.8, 2.5)
    d_ab, d_ba = ev.surface_distances(a, b, spacing)
    ref_ab, ref_ba = _brute_distances(a, b, spacing)
    np.testing.assert_allclose(d_ab, ref_ab, rtol=1e-12)
    np.testing.assert_allclose(d_ba, ref_ba, rtol=1e-12)


@pytest.mark.parametrize(("axis", "k"), [(2, 1), (2, 2), (0, 3), (1, 2)])
def test_cube_shifted_by_k_voxels(axis, k):
    spacing = (0.7, 0.7, 3.0)
    a = np.zeros((24, 24, 16), bool)
    a[6:14, 6:14, 3:11] = True  # an 8-voxel cube
    b = np.roll(a, k, axis=axis)
    shift_mm = k * spacing[axis]
    hd = ev.hausdorff95(a, b, spacing)
    assert hd == pytest.approx(_brute_hd95(a, b, spacing), rel=1e-12)
    assert hd == pytest.approx(shift_mm)
    # every surface voxel is within the shift of the other surface
    assert ev.normalized_surface_dice(a, b, spacing, tolerance_mm=shift_mm) == 1.0
    assert ev.normalized_surface_dice(a, b, spacing, tolerance_mm=shift_mm + 1.0) == 1.0
    tight = ev.normalized_surface_dice(a, b, spacing, tolerance_mm=0.5 * shift_mm)
    assert tight == pytest.approx(_brute_nsd(a, b, spacing, 0.5 * shift_mm))
    assert tight < 1.0
    # Dice by hand: the cubes overlap in (8 - k) of 8 slices along the shift axis
    assert ev.dice(a, b) == pytest.approx(2 * (8 - k) * 64 / (2 * 512))


def test_dice_hand_counted_2d():
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[1:5, 1:5] = True  # 16 voxels
    b[2:6, 1:5] = True  # 16 voxels, overlap 3 x 4 = 12
    assert ev.dice(a, b) == pytest.approx(24 / 32)
    c = np.zeros((8, 8), bool)
    c[6:8, 6:8] = True
    assert ev.dice(a, c) == 0.0
    assert ev.dice(a, a) == 1.0
    # integer masks are read as != 0
    assert ev.dice(a.astype(np.uint8) * 3, b.astype(np.int64)) == pytest.approx(0.75)


def test_anisotropic_spacing_scales_distances_per_axis():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2:5, 2:5] = True
    b[2:5, 5:8] = True  # moved by 3 voxels along axis 1
    assert ev.hausdorff95(a, b, (1.0, 1.0)) == pytest.approx(3.0)
    assert ev.hausdorff95(a, b, (5.0, 2.0)) == pytest.approx(6.0)  # only axis 1's spacing matters
    assert ev.hausdorff95(a, b, (5.0, 2.0)) == pytest.approx(_brute_hd95(a, b, (5.0, 2.0)))


def test_empty_masks():
    empty = np.zeros((6, 6, 6), bool)
    full = np.zeros((6, 6, 6), bool)
    full[1:4, 1:4, 1:4] = True
    sp = (1.0, 1.0, 2.0)
    # both empty: perfect
    assert ev.dice(empty, empty) == 1.0
    assert ev.normalized_surface_dice(empty, empty, sp, 1.0) == 1.0
    assert ev.hausdorff95(empty, empty, sp) == 0.0
    d_ab, d_ba = ev.surface_distances(empty, empty, sp)
    assert d_ab.size == 0 and d_ba.size == 0
    # exactly one empty: Dice 0, NSD 0, HD95 undefined
    for a, b in ((full, empty), (empty, full)):
        assert ev.dice(a, b) == 0.0
        assert ev.normalized_surface_dice(a, b, sp, 100.0) == 0.0
        assert math.isnan(ev.hausdorff95(a, b, sp))
    d_ab, d_ba = ev.surface_distances(full, empty, sp)
    assert d_ab.size == np.count_nonzero(_brute_surface(full)) and np.all(np.isinf(d_ab))
    assert d_ba.size == 0


def test_input_errors_say_what_to_do():
    a = np.zeros((4, 5), bool)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 6\)"):
        ev.dice(a, np.zeros((4, 6), bool))
    with pytest.raises(ValueError, match="3 values but the masks have 2 axes"):
        ev.hausdorff95(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="must be finite and > 0"):
        ev.surface_distances(a, a, (1.0, 0.0))
    with pytest.raises(ValueError, match="boolean mask is expected"):
        ev.dice(a.astype(float), a)
    with pytest.raises(ValueError, match="tolerance_mm"):
        ev.normalized_surface_dice(a, a, (1.0, 1.0), -1.0)


def test_evaluate_case_per_class_against_brute_force():
    rng = np.random.default_rng(3)
    spacing = (0.7, 0.7, 3.0)
    ref = np.zeros((20, 20, 10), np.int16)
    ref[3:12, 3:12, 2:7] = 1
    ref[13:18, 5:15, 4:9] = 2
    pred = ref.copy()
    pred[2:11, 4:13, 3:8][pred[2:11, 4:13, 3:8] == 0] = 1
    pred[rng.random(pred.shape) < 0.03] = 2
    pred[15:18, 5:15, 4:9] = 0
    result = ev.evaluate_case(pred, ref, spacing, classes=[1, 2, 3], tolerance_mm={1: 1.0, 2: 2.5, 3: 1.0})
    assert set(result) == {1, 2, 3}
    for c, tol in ((1, 1.0), (2, 2.5)):
        p, r = pred == c, ref == c
        inter = np.count_nonzero(p & r)
        assert result[c]["dice"] == pytest.approx(2 * inter / (p.sum() + r.sum()))
        assert result[c]["hd95"] == pytest.approx(_brute_hd95(p, r, spacing), rel=1e-12)
        assert result[c]["nsd"] == pytest.approx(_brute_nsd(p, r, spacing, tol))
        assert result[c]["pred_voxels"] == p.sum() and result[c]["ref_voxels"] == r.sum()
    # class 3 is absent from both: a perfect score
    assert result[3] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, "pred_voxels": 0.0, "ref_voxels": 0.0}
    # one tolerance for all classes
    single = ev.evaluate_case(pred, ref, spacing, classes=[2], tolerance_mm=2.5)
    assert single[2]["nsd"] == result[2]["nsd"]


def test_evaluate_case_errors():
    labels = np.zeros((5, 5, 5), np.int32)
    with pytest.raises(
        ValueError, match=r"pred_labels has shape \(5, 5, 5\) but ref_labels has shape \(5, 5, 4\)"
    ):
        ev.evaluate_case(labels, labels[..., :4], (1, 1, 1), [1])
    with pytest.raises(ValueError, match="no entry for class 2"):
        ev.evaluate_case(labels, labels, (1, 1, 1), [1, 2], tolerance_mm={1: 1.0})
    with pytest.raises(ValueError, match="integer label map"):
        ev.evaluate_case(labels.astype(np.float32), labels, (1, 1, 1), [1])
    with pytest.raises(ValueError, match="spacing"):
        ev.evaluate_case(labels, labels, (1, 1), [1])


def test_summarize_hand_computed_and_json_safe():
    nan = float("nan")
    per_case = [
        {1: {"dice": 0.5, "hd95": 2.0, "nsd": 0.6}, 2: {"dice": 0.0, "hd95": nan, "nsd": 0.0}},
        {1: {"dice": 1.0, "hd95": 4.0, "nsd": 1.0}, 2: {"dice": 0.8, "hd95": 3.0, "nsd": 0.9}},
        {"1": {"dice": 0.75, "hd95": nan, "nsd": 0.8}, "2": {"dice": 0.4, "hd95": 1.0, "nsd": 0.3}},
    ]
    s = ev.summarize(per_case)
    assert s["n_cases"] == 3
    d1 = s["classes"]["1"]["dice"]
    assert d1["mean"] == pytest.approx(0.75) and d1["n"] == 3 and d1["n_nan"] == 0
    assert d1["std"] == pytest.approx(math.sqrt((0.25**2 + 0.25**2 + 0) / 3))
    h1 = s["classes"]["1"]["hd95"]
    assert h1 == {"mean": pytest.approx(3.0), "std": pytest.approx(1.0), "n": 2, "n_nan": 1}
    h2 = s["classes"]["2"]["hd95"]
    assert h2["mean"] == pytest.approx(2.0) and h2["n_nan"] == 1
    # the mean over classes of the class means
    assert s["mean"]["dice"] == pytest.approx((0.75 + 0.4) / 2)
    assert s["mean"]["hd95"] == pytest.approx((3.0 + 2.0) / 2)
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text)["classes"]["2"]["nsd"]["mean"] == pytest.approx(0.4)


def test_summarize_all_nan_is_none_and_counts_are_not_class_averaged():
    cases = [
        ev.evaluate_case(np.zeros((4, 4), int), np.pad(np.ones((2, 2), int), 1), (1.0, 1.0), [1]),
        ev.evaluate_case(np.zeros((4, 4), int), np.pad(np.ones((2, 2), int), 1), (1.0, 1.0), [1]),
    ]
    s = ev.summarize(cases)
    assert s["classes"]["1"]["hd95"] == {"mean": None, "std": None, "n": 0, "n_nan": 2}
    assert s["mean"]["hd95"] is None and s["mean"]["dice"] == 0.0
    assert s["classes"]["1"]["ref_voxels"]["mean"] == 4.0
    assert "ref_voxels" not in s["mean"]
    json.dumps(s, allow_nan=False)
