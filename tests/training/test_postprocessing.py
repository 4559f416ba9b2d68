"""nnU-Net's largest-component postprocessing against hand-built label maps and hand-counted Dice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from delira.training.postprocessing import (
    PostprocessingRule,
    apply_postprocessing,
    decide_postprocessing,
    keep_largest_component,
)


def _hand_dice(p: np.ndarray, r: np.ndarray) -> float:
    total = p.sum() + r.sum()
    return 1.0 if total == 0 else 2.0 * (p & r).sum() / total


def test_keep_largest_component_2d_connectivity():
    m = np.zeros((7, 7), bool)
    m[0:2, 0:3] = True  # 6 voxels
    m[2, 3] = True  # touches the block only diagonally (corner of (1, 2))
    m[5:7, 5:7] = True  # 4 voxels, separate
    full = keep_largest_component(m)  # default: full connectivity (8-neighbourhood)
    expected = np.zeros_like(m)
    expected[0:2, 0:3] = True
    expected[2, 3] = True
    np.testing.assert_array_equal(full, expected)
    faces = keep_largest_component(m, connectivity=1)  # 4-neighbourhood: the diagonal voxel is cut off
    expected[2, 3] = False
    np.testing.assert_array_equal(faces, expected)
    assert full.dtype == bool and m.sum() == 11  # input untouched


def test_keep_largest_component_3d_ties_and_empty():
    m = np.zeros((10, 10, 10), bool)
    m[0:3, 0:3, 0:3] = True  # 27
    m[6:8, 6:8, 6:8] = True  # 8
    m[9, 0, 9] = True  # 1
    out = keep_largest_component(m)
    assert out.sum() == 27 and out[0:3, 0:3, 0:3].all()
    # two equal components: the first in raster order stays
    tie = np.zeros((4, 8), bool)
    tie[0:2, 0:2] = True
    tie[2:4, 5:7] = True
    kept = keep_largest_component(tie)
    assert kept.sum() == 4 and kept[0:2, 0:2].all()
    assert not keep_largest_component(np.zeros((3, 3, 3), bool)).any()
    with pytest.raises(ValueError, match=r"connectivity must be an integer in \[1, 3\]"):
        keep_largest_component(m, connectivity=4)


def test_apply_postprocessing_removes_only_chosen_classes():
    labels = np.zeros((12, 12, 6), np.uint8)
    labels[1:6, 1:6, 1:5] = 1  # main component of class 1
    labels[10, 10, 0] = 1  # spurious voxel of class 1
    labels[7:9, 1:3, 1:3] = 2  # two components of class 2
    labels[1:3, 9:11, 1:3] = 2
    original = labels.copy()
    out = apply_postprocessing(labels, PostprocessingRule([1]))
    np.testing.assert_array_equal(labels, original)  # not modified in place
    assert out.dtype == np.uint8
    assert out[10, 10, 0] == 0
    expected = original.copy()
    expected[10, 10, 0] = 0
    np.testing.assert_array_equal(out, expected)
    both = apply_postprocessing(labels, PostprocessingRule([1, 2]))
    assert (both == 2).sum() == 8  # one of the two equal class-2 components remains
    with pytest.raises(ValueError, match="integer label map"):
        apply_postprocessing(labels.astype(float), PostprocessingRule([1]))


def _validation_cases():
    """Class 1: the reference plus a small blob far away (rule helps). Class 2: two true
    components of similar size, predicted well (rule hurts). Class 3: never present (tie)."""
    cases = []
    for shift in range(3):
        ref = np.zeros((24, 24, 12), np.int32)
        ref[2 + shift : 10 + shift, 2:10, 2:8] = 1  # 384 voxels
        ref[14:18, 2:6, 2:6] = 2  # 64 voxels
        ref[14:18, 14 : 18 + (shift % 2), 2:6] = 2  # 64 or 80 voxels
        pred = ref.copy()
        pred[20:22, 20:22, 9:11] = 1  # spurious blob, 8 voxels
        pred[14, 2:6, 2:6] = 0  # a slightly worse class 2: 16 voxels missed
        cases.append((pred, ref))
    return cases


def test_decide_postprocessing_chooses_where_dice_improves():
    cases = _validation_cases()
    rule = decide_postprocessing(iter(cases), classes=[1, 2, 3])  # a one-shot iterator works
    assert rule.largest_component_classes == [1]
    # hand-counted class 1: before 2*384 / (392 + 384), after the blob is gone 1.0
    d1 = rule.decided_on[1]
    assert d1["dice_before"] == pytest.approx(2 * 384 / (392 + 384))
    assert d1["dice_after"] == pytest.approx(1.0)
    assert d1["n_cases"] == 3
    d2 = rule.decided_on[2]
    assert d2["dice_after"] < d2["dice_before"]
    assert rule.decided_on[3] == {"dice_before": 1.0, "dice_after": 1.0, "n_cases": 3}  # tie: left out


def test_apply_and_decide_agree():
    cases = _validation_cases()
    rule = decide_postprocessing(cases, classes=[1, 2])
    for c in (1, 2):
        applied = [_hand_dice(apply_postprocessing(p, rule) == c, r == c) for p, r in cases]
        raw = [_hand_dice(p == c, r == c) for p, r in cases]
        assert np.mean(raw) == pytest.approx(rule.decided_on[c]["dice_before"])
        expected = rule.decided_on[c]["dice_after" if c in rule.largest_component_classes else "dice_before"]
        assert np.mean(applied) == pytest.approx(expected)
    # applying a rule with every class gives the "after" Dice of every class
    everything = PostprocessingRule([1, 2])
    for c in (1, 2):
        applied = [_hand_dice(apply_postprocessing(p, everything) == c, r == c) for p, r in cases]
        assert np.mean(applied) == pytest.approx(rule.decided_on[c]["dice_after"])


def test_rule_json_round_trip(tmp_path):
    rule = decide_postprocessing(_validation_cases(), classes=[1, 2])
    path = tmp_path / "postprocessing.json"
    rule.save(path)
    data = json.loads(path.read_text())
    assert data["largest_component_classes"] == [1]
    assert set(data["decided_on"]) == {"1", "2"}
    loaded = PostprocessingRule.load(path)
    assert loaded == rule
    assert PostprocessingRule.from_dict(rule.to_dict()) == rule
    assert [p.name for p in tmp_path.iterdir()] == ["postprocessing.json"]  # no temporary file left


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no cases given"):
        decide_postprocessing([], classes=[1])
    with pytest.raises(ValueError, match="0 is the background"):
        decide_postprocessing(_validation_cases(), classes=[0, 1])
    a = np.zeros((4, 4), int)
    with pytest.raises(ValueError, match=r"case 0 has pred_labels \(4, 4\) but ref_labels \(4, 5\)"):
        decide_postprocessing([(a, np.zeros((4, 5), int))], classes=[1])
    with pytest.raises(ValueError, match="largest_component_classes"):
        PostprocessingRule.from_dict({"classes": [1]})
    with pytest.raises(FileNotFoundError, match="no postprocessing rule"):
        PostprocessingRule.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PostprocessingRule.load(bad)
