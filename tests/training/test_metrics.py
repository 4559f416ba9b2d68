"""Metrics against hand-computed values and scikit-learn / scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from delira.training import metrics


def test_dice_and_iou_hand_computed():
    pred = np.array([[0, 1, 1, 2], [2, 2, 0, 0]])
    target = np.array([[0, 1, 0, 2], [2, 1, 0, 0]])
    # class 1: P = 2 voxels, T = 2 voxels, overlap 1 -> dice 2*1/4 = 0.5, iou 1/3
    # class 2: P = 3 voxels, T = 2 voxels, overlap 2 -> dice 4/5, iou 2/3
    d = metrics.dice(pred, target, num_classes=3)
    assert d["class_1"] == pytest.approx(0.5)
    assert d["class_2"] == pytest.approx(0.8)
    assert d["mean"] == pytest.approx(0.65)
    assert "class_0" not in d
    j = metrics.iou(pred, target, num_classes=3)
    assert j["class_1"] == pytest.approx(1 / 3)
    assert j["class_2"] == pytest.approx(2 / 3)
    with_bg = metrics.dice(pred, target, num_classes=3, include_background=True)
    # class 0: P = 3 voxels, T = 4 voxels, overlap 3 -> 6 / 7
    assert with_bg["class_0"] == pytest.approx(6 / 7)


def test_dice_absent_class_is_nan_and_left_out_of_the_mean():
    d = metrics.dice(np.zeros(4, int), np.array([0, 1, 1, 0]), num_classes=3)
    assert d["class_1"] == 0.0 and np.isnan(d["class_2"]) and d["mean"] == 0.0


def test_dice_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        metrics.dice(np.zeros((2, 3), int), np.zeros((2, 4), int), 2)


def _reference_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """Surfaces by scipy erosion with a face-connected structure; distances by cdist."""
    from scipy import ndimage

    def surface(m):
        eroded = ndimage.binary_erosion(
            m, structure=ndimage.generate_binary_structure(m.ndim, 1), border_value=0
        )
        return np.argwhere(m & ~eroded)

    sa, sb = surface(a), surface(b)
    d = cdist(sa, sb)
    return float(np.percentile(np.concatenate([d.min(1), d.min(0)]), 95))


def test_hausdorff95_against_scipy():
    rng = np.random.default_rng(0)
    pred = np.zeros((12, 12, 12), int)
    target = np.zeros((12, 12, 12), int)
    pred[2:8, 3:9, 1:7] = 1
    target[3:10, 2:8, 2:9] = 1
    pred[rng.random(pred.shape) < 0.02] = 1
    result = metrics.hausdorff95(pred, target, num_classes=2)
    assert result["class_1"] == pytest.approx(_reference_hd95(pred == 1, target == 1))


def test_hausdorff95_hand_computed_shift_and_spacing():
    a = np.zeros((10, 10), int)
    b = np.zeros((10, 10), int)
    a[2:5, 2:5] = 1
    b[2:5, 5:8] = 1  # the same square moved by 3 along axis 1: every surface distance is <= 3
    hd = metrics.hausdorff95(a, b, num_classes=2)["class_1"]
    assert hd == pytest.approx(_reference_hd95(a == 1, b == 1))
    assert hd == pytest.approx(3.0)
    scaled = metrics.hausdorff95(a, b, num_classes=2, spacing=(1.0, 2.0))["class_1"]
    assert scaled == pytest.approx(6.0)
    # a batch (N, *spatial) gives the mean over the images
    batch = metrics.hausdorff95(np.stack([a, a]), np.stack([b, a]), num_classes=2, spacing=(1.0, 1.0))
    assert batch["class_1"] == pytest.approx(1.5)
    assert metrics.hausdorff95(a, np.zeros_like(a), 2)["class_1"] == float("inf")


def test_classification_metrics_against_sklearn():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, target, rng.integers(0, 3, 200))
    assert metrics.accuracy(pred, target) == pytest.approx(accuracy_score(target, pred))
    assert metrics.balanced_accuracy(pred, target) == pytest.approx(balanced_accuracy_score(target, pred))
    scores = rng.random((200, 3)) + np.eye(3)[target] * 0.5
    scores = np.round(scores, 1)  # ties
    result = metrics.auroc(scores, target)
    for c in range(3):
        assert result[f"class_{c}"] == pytest.approx(roc_auc_score(target == c, scores[:, c]))
    macro = np.mean([roc_auc_score(target == c, scores[:, c]) for c in range(3)])
    assert result["mean"] == pytest.approx(macro)
    binary = target % 2
    assert metrics.auroc(scores[:, 0], binary)["class_1"] == pytest.approx(
        roc_auc_score(binary, scores[:, 0])
    )


def test_auroc_hand_computed():
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs won 3 of 4 -> 0.75
    assert metrics.auroc(np.array([0.8, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0]))["class_1"] == pytest.approx(
        0.75
    )


def test_trainer_metric_wrappers():
    logits = np.zeros((2, 2, 4, 4), np.float32)
    logits[:, 1, :2] = 1.0  # class 1 in the first two rows
    seg = np.zeros((2, 1, 4, 4), np.int16)
    seg[:, 0, :2] = 1
    seg[1, 0, 0] = 0  # 4 of 8 foreground voxels of image 1 missing
    fn = metrics.segmentation_metric("dice", num_classes=2)
    # P = 16, T = 12, overlap 12 -> 24 / 28
    assert fn(logits, {"seg": seg})["mean"] == pytest.approx(24 / 28)
    with pytest.raises(KeyError, match=r"'seg'.*\['data'\]"):
        fn(logits, {"data": seg})
    with pytest.raises(ValueError, match=r"\(2, 2, 4, 4\).*\(2, 1, 4, 5\)"):
        fn(logits, {"seg": np.zeros((2, 1, 4, 5), int)})
    hd = metrics.segmentation_metric("hausdorff95", num_classes=2)(logits, {"seg": seg})
    # image 0 matches exactly (0); image 1: predicted rows 0-1, true row 1 only -> hand-computed reference
    assert hd["class_1"] == pytest.approx(
        (0.0 + _reference_hd95(logits[1].argmax(0) == 1, seg[1, 0] == 1)) / 2
    )
    assert hd["class_1"] > 0
    acc = metrics.classification_metric("accuracy")
    assert acc(
        np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), {"label": np.array([1, 1, 1])}
    ) == pytest.approx(2 / 3)
    with pytest.raises(KeyError, match="'label'"):
        acc(np.zeros((3, 2)), {"seg": 0})
