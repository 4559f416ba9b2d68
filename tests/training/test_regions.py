"""Region-based training (nnU-Net's regions, sigmoid outputs) and the ignore label (sparse
annotations): the conversions, the losses (hand-computed, numpy references, torch == Keras, ignored
voxels change nothing, deep supervision), the metrics, the config checks, and tiny end-to-end runs
(train, evaluate, predict) with torch and TensorFlow."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest

from delira.training.config import ConfigError, load_config
from delira.training.metrics import dice, region_scores, segmentation_metric
from delira.training.regions import (
    check_ignore_label,
    check_regions,
    default_regions_order,
    labels_to_regions,
    paint_regions,
)

BRATS = [[1, 2, 3], [2, 3], [3]]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z, axis=1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- numpy references, written from the definitions -------------------------------------------------
def _np_region_targets(labels, regions):
    return np.stack([np.isin(labels, r) for r in regions], axis=1).astype(np.float64)


def _np_region_bce(z, labels, regions, ignore=None):
    t = _np_region_targets(labels, regions)
    z = z.astype(np.float64)
    p = _sigmoid(z)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    m = np.ones_like(labels, dtype=np.float64) if ignore is None else (labels != ignore).astype(np.float64)
    return float((bce * m[:, None]).sum() / (m.sum() * len(regions)))


def _np_region_dice(z, labels, regions, smooth, ignore=None):
    t = _np_region_targets(labels, regions)
    s = _sigmoid(z.astype(np.float64))
    m = np.ones_like(labels, dtype=np.float64) if ignore is None else (labels != ignore).astype(np.float64)
    s, t = s * m[:, None], t * m[:, None]
    axes = (0, *range(2, s.ndim))
    d = (2 * (s * t).sum(axes) + smooth) / (s.sum(axes) + t.sum(axes) + smooth)
    return float(1 - d.mean())


def _np_ce(z, labels, ignore):
    m = labels != ignore
    logp = np.log(_softmax(z.astype(np.float64)))
    safe = np.where(m, labels, 0)
    nll = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    return float(nll[m].mean())


def _np_dice(z, labels, ignore, smooth):
    m = (labels != ignore).astype(np.float64)[:, None]
    p = _softmax(z.astype(np.float64))
    k = z.shape[1]
    onehot = np.stack([np.where(labels == c, 1.0, 0.0) for c in range(k)], axis=1)
    p, onehot = (p * m)[:, 1:], (onehot * m)[:, 1:]
    axes = (0, *range(2, p.ndim))
    d = (2 * (p * onehot).sum(axes) + smooth) / (p.sum(axes) + onehot.sum(axes) + smooth)
    return float(1 - d.mean())


# --- conversions --------------------------------------------------------------------------------------
def test_nested_regions_round_trip_to_the_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(5, 6, 7))
    masks = labels_to_regions(labels, BRATS)
    assert masks.shape == (3, 5, 6, 7) and masks.dtype == bool
    np.testing.assert_array_equal(masks[0], labels >= 1)  # whole tumour
    np.testing.assert_array_equal(masks[1], (labels == 2) | (labels == 3))  # core
    np.testing.assert_array_equal(masks[2], labels == 3)  # enhancing
    order = default_regions_order(BRATS)
    assert order == [1, 2, 3]
    np.testing.assert_array_equal(paint_regions(masks.astype(np.float32), order), labels)
    # the batch layout: regions on axis 1
    np.testing.assert_array_equal(
        paint_regions(labels_to_regions(labels, BRATS, axis=1), order, axis=1), labels
    )


def test_painting_is_nnunets_thresholded_overwrite_in_order():
    """nnU-Net's LabelManager.convert_probabilities_to_segmentation: zeros, then for region i in
    order ``seg[probs[i] > 0.5] = regions_class_order[i]`` (the loop written out by hand)."""
    rng = np.random.default_rng(1)
    probs = rng.uniform(size=(3, 4, 5)).astype(np.float32)
    order = [3, 1, 2]  # any order: later regions paint over earlier ones
    expected = np.zeros((4, 5), dtype=np.int64)
    for i, j in itertools.product(range(4), range(5)):
        for r in range(3):
            if probs[r, i, j] > 0.5:
                expected[i, j] = order[r]
    np.testing.assert_array_equal(paint_regions(probs, order), expected)
    assert paint_regions(np.full((3, 2), 0.5), order).max() == 0  # exactly 0.5 is not in the region


def test_region_checks_name_the_fix():
    assert check_regions(BRATS) == []
    assert "non-empty list" in check_regions([])[0]
    assert "label <= 0" in check_regions([[0, 1]])[0]
    assert "not labels of the dataset" in check_regions([[1, 5]], labels=[1, 2])[0]
    assert "twice" in check_regions([[1, 2], [2, 1]], regions_order=[1, 2])[0]
    # not nested: the painted label is not implied
    assert "regions_order" in check_regions([[1, 2], [2, 3]])[0]
    assert check_regions([[1, 2], [2, 3]], regions_order=[1, 3]) == []
    assert "not in region" in check_regions([[1, 2], [2, 3]], regions_order=[1, 1])[0]
    assert "2 labels for 3 regions" in check_regions(BRATS, regions_order=[1, 2])[0]
    assert check_ignore_label(None) == []
    assert "member of data.regions" in check_ignore_label(3, regions=BRATS)[0]
    assert "above them" in check_ignore_label(2, num_classes=3)[0]
    assert check_ignore_label(3, num_classes=3) == []
    assert check_ignore_label(4, regions=BRATS) == []


# --- losses -------------------------------------------------------------------------------------------
torch_only = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="the torch losses need torch"
)
tf_only = pytest.mark.skipif(
    __import__("importlib").util.find_spec("keras") is None, reason="the Keras losses need keras"
)


def _both(name, z, labels, **kwargs):
    """The loss of torch and of Keras on the same numpy inputs."""
    import torch

    from delira.training.losses import make_loss

    t = float(make_loss(name, "torch", **kwargs)(torch.from_numpy(z), torch.from_numpy(labels)))
    values = [t]
    if __import__("importlib").util.find_spec("keras") is not None:
        values.append(float(make_loss(name, "tf", **kwargs)(labels, z)))
    return values


@torch_only
def test_region_losses_by_hand_on_two_voxels():
    """One region [1], two voxels, logits 0: BCE = log 2, soft Dice (smooth 0) = 1 - 2*0.5/(1+1);
    with ignore label 2 on the second voxel (logit 5): BCE log 2, Dice 1 - 2*0.5/(0.5+1) = 1/3."""
    z = np.zeros((1, 1, 2), np.float32)
    labels = np.array([[[1, 0]]], np.int64)
    for value in _both("ce", z, labels, regions=[[1]]):
        assert value == pytest.approx(np.log(2.0), rel=1e-6)
    for value in _both("dice", z, labels, regions=[[1]], smooth=0.0):
        assert value == pytest.approx(0.5, rel=1e-6)
    z = np.array([[[0.0, 5.0]]], np.float32)
    labels = np.array([[[1, 2]]], np.int64)
    for value in _both("ce", z, labels, regions=[[1]], ignore_label=2):
        assert value == pytest.approx(np.log(2.0), rel=1e-6)
    for value in _both("dice", z, labels, regions=[[1]], ignore_label=2, smooth=0.0):
        assert value == pytest.approx(1.0 / 3.0, rel=1e-6)


@torch_only
@pytest.mark.parametrize("ignore", [None, 4])
def test_region_losses_match_the_numpy_definitions_torch_and_keras(ignore):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5 if ignore else 4, size=(2, 1, 4, 5)).astype(np.int64)
    bce = _np_region_bce(z, labels[:, 0], BRATS, ignore)
    dc = _np_region_dice(z, labels[:, 0], BRATS, 1.0, ignore)
    for value in _both("ce", z, labels, regions=BRATS, ignore_label=ignore):
        assert value == pytest.approx(bce, rel=1e-5)
    for value in _both("dice", z, labels, regions=BRATS, ignore_label=ignore):
        assert value == pytest.approx(dc, rel=1e-5)
    # Tversky with alpha = beta = 0.5 and smooth s is the soft Dice with smooth 2s
    for value in _both(
        "tversky", z, labels, regions=BRATS, ignore_label=ignore, alpha=0.5, beta=0.5, smooth=0.5
    ):
        assert value == pytest.approx(dc, rel=1e-5)


@torch_only
def test_label_losses_with_an_ignore_label_match_the_numpy_definitions():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 1, 4, 4)).astype(np.int64)  # 3: the ignore label
    for value in _both("ce", z, labels, ignore_label=3):
        assert value == pytest.approx(_np_ce(z, labels[:, 0], 3), rel=1e-5)
    for value in _both("dice", z, labels, ignore_label=3):
        assert value == pytest.approx(_np_dice(z, labels[:, 0], 3, 1.0), rel=1e-5)
    # focal with gamma 0 is the cross-entropy; weighted CE with equal weights is the CE
    for value in _both("focal", z, labels, ignore_label=3, gamma=0.0):
        assert value == pytest.approx(_np_ce(z, labels[:, 0], 3), rel=1e-5)
    for value in _both("ce", z, labels, ignore_label=3, class_weights=[2.0, 2.0, 2.0]):
        assert value == pytest.approx(_np_ce(z, labels[:, 0], 3), rel=1e-5)


LOSS_CASES = [
    ("ce", {}),
    ("dice", {}),
    ("focal", {}),
    ("tversky", {}),
    ("ce", {"class_weights": [0.5, 1.0, 2.0]}),
    ("ce", {"regions": [[1, 2], [2]]}),
    ("dice", {"regions": [[1, 2], [2]]}),
    ("tversky", {"regions": [[1, 2], [2]]}),
]


@torch_only
@pytest.mark.parametrize(("name", "kwargs"), LOSS_CASES)
def test_ignored_voxels_change_neither_loss_nor_gradient(name, kwargs):
    import torch

    from delira.training.losses import make_loss

    rng = np.random.default_rng(4)
    k = 2 if "regions" in kwargs else 3
    labels = rng.integers(0, 4, size=(2, 1, 5, 4)).astype(np.int64)  # 3: the ignore label
    ignored = np.broadcast_to(labels == 3, (2, k, 5, 4))
    z = rng.normal(size=(2, k, 5, 4)).astype(np.float32)
    other = np.where(ignored, rng.normal(scale=10.0, size=z.shape), z).astype(np.float32)
    loss = make_loss(name, "torch", ignore_label=3, **kwargs)
    grads, values = [], []
    for logits in (z, other):
        x = torch.tensor(logits, requires_grad=True)
        value = loss(x, torch.from_numpy(labels))
        value.backward()
        values.append(float(value.detach()))
        grads.append(x.grad.numpy())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)
    assert np.all(grads[0][ignored] == 0)
    assert np.any(grads[0][~ignored] != 0)
    if __import__("importlib").util.find_spec("keras") is not None:
        keras_loss = make_loss(name, "tf", ignore_label=3, **kwargs)
        for logits in (z, other):
            assert float(keras_loss(labels, logits)) == pytest.approx(values[0], rel=1e-5)


@torch_only
def test_all_voxels_ignored_gives_zero_not_nan():
    import torch

    from delira.training.losses import make_loss

    labels = torch.full((1, 1, 2, 2), 3)
    for name in ("ce", "focal"):
        assert float(make_loss(name, "torch", ignore_label=3)(torch.zeros(1, 3, 2, 2), labels)) == 0.0
    assert (
        float(make_loss("ce", "torch", regions=[[1]], ignore_label=3)(torch.zeros(1, 1, 2, 2), labels)) == 0.0
    )


@torch_only
@pytest.mark.parametrize("regions", [None, [[1, 2], [2]]])
def test_deep_supervision_keeps_ignored_voxels_ignored(regions):
    """The labels are subsampled by picking voxels (step 2): an ignored voxel stays ignored, and the
    low-resolution outputs at the picked ignored voxels do not matter."""
    import torch

    from delira.training.losses import segmentation_losses

    rng = np.random.default_rng(5)
    k = 2 if regions else 3
    labels = rng.integers(0, 4, size=(2, 1, 8, 8)).astype(np.int64)
    outputs = [
        rng.normal(size=(2, k, 8, 8)).astype(np.float32),
        rng.normal(size=(2, k, 4, 4)).astype(np.float32),
    ]
    outputs.append(rng.normal(size=(2, k, 2, 2)).astype(np.float32))
    strides = [(1, 1), (2, 2), (4, 4)]
    losses = segmentation_losses(
        "ce+dice", "torch", k, deep_supervision_strides=strides, regions=regions, ignore_label=3
    )
    sub = labels[:, :, ::2, ::2]
    ignored = np.broadcast_to(sub == 3, outputs[1].shape)
    assert ignored.any()
    changed = [outputs[0], np.where(ignored, 50.0, outputs[1]).astype(np.float32), outputs[2]]
    plain = segmentation_losses("ce+dice", "torch", k, regions=regions, ignore_label=3)
    for name, fn in losses.items():
        value = float(fn([torch.from_numpy(o) for o in outputs], torch.from_numpy(labels)))
        again = float(fn([torch.from_numpy(o) for o in changed], torch.from_numpy(labels)))
        assert value == pytest.approx(again, rel=1e-6)
        # nnU-Net's weights for 3 outputs: 2/3, 1/3, 0 (the lowest resolution left out)
        by_hand = 2 / 3 * float(plain[name](torch.from_numpy(outputs[0]), torch.from_numpy(labels)))
        by_hand += 1 / 3 * float(plain[name](torch.from_numpy(outputs[1]), torch.from_numpy(sub)))
        assert value == pytest.approx(by_hand, rel=1e-6)
    if __import__("importlib").util.find_spec("keras") is not None:  # Keras: the same numbers
        keras_losses = segmentation_losses(
            "ce+dice", "tf", k, deep_supervision_strides=strides, regions=regions, ignore_label=3
        )
        for name, fn in keras_losses.items():
            value = float(losses[name]([torch.from_numpy(o) for o in outputs], torch.from_numpy(labels)))
            assert float(fn(labels, outputs)) == pytest.approx(value, rel=1e-5)
            assert float(fn(labels, changed)) == pytest.approx(value, rel=1e-5)


def test_region_losses_refuse_what_they_cannot_do():
    from delira.training.losses import make_loss, segmentation_losses

    with pytest.raises(ValueError, match="not defined for region training"):
        make_loss("focal", "torch", regions=[[1]])
    with pytest.raises(ValueError, match="class_weights do not apply"):
        segmentation_losses("ce", "torch", 2, {"ce": {"class_weights": [1, 1]}}, regions=[[1], [2]])
    with pytest.raises(ValueError, match="ignore_label must be None or a label value > 0"):
        make_loss("ce", "torch", ignore_label=-1)
    with pytest.raises(ValueError, match="label <= 0"):
        make_loss("dice", "torch", regions=[[0, 1]])


@torch_only
def test_region_losses_name_the_channel_mismatch():
    import torch

    from delira.training.losses import make_loss

    with pytest.raises(ValueError, match=r"set model\.args\.num_classes to 3"):
        make_loss("ce", "torch", regions=BRATS)(
            torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long)
        )


# --- metrics --------------------------------------------------------------------------------------------
def _np_dice_of_masks(p, t):
    inter = np.logical_and(p, t).sum()
    size = p.sum() + t.sum()
    return np.nan if size == 0 else 2.0 * inter / size


def test_region_metric_against_numpy_with_an_ignore_label():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(2, 3, 5, 6)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 1, 5, 6))  # 4: ignored
    keep = labels[:, 0] != 4
    metric = segmentation_metric("dice", 3, regions=BRATS, ignore_label=4)
    result = metric(logits, {"seg": labels})
    expected = []
    for r, region in enumerate(BRATS):
        p = (logits[:, r] > 0) & keep
        t = np.isin(labels[:, 0], region) & keep
        expected.append(_np_dice_of_masks(p, t))
        assert result[f"region_{r}"] == pytest.approx(expected[-1])
    assert result["mean"] == pytest.approx(np.nanmean(expected))
    # with the painting order: the prediction's regions are those of the painted labels
    painted = segmentation_metric("dice", 3, regions=BRATS, regions_order=[1, 2, 3], ignore_label=4)
    result = painted(logits, {"seg": labels})
    seg = np.zeros(labels[:, 0].shape, int)
    for r, value in enumerate([1, 2, 3]):
        seg[logits[:, r] > 0] = value
    for r, region in enumerate(BRATS):
        expected = _np_dice_of_masks(np.isin(seg, region) & keep, np.isin(labels[:, 0], region) & keep)
        assert result[f"region_{r}"] == pytest.approx(expected)


def test_label_metrics_leave_ignored_voxels_out():
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 3, size=(4, 5, 6))
    target = rng.integers(0, 4, size=(4, 5, 6))  # 3: ignored
    keep = target != 3
    result = dice(pred, target, 3, ignore_label=3)
    for c in (1, 2):
        assert result[f"class_{c}"] == pytest.approx(
            _np_dice_of_masks((pred == c) & keep, (target == c) & keep)
        )
    # a prediction that differs only at ignored voxels scores the same
    other = np.where(keep, pred, 1)
    assert dice(other, target, 3, ignore_label=3) == result
    scores = region_scores("iou", labels_to_regions(pred, BRATS), labels_to_regions(target, BRATS), keep)
    p, t = (pred >= 1) & keep, np.isin(target, [1, 2, 3]) & keep
    assert scores["region_0"] == pytest.approx((p & t).sum() / (p | t).sum())


# --- configuration -------------------------------------------------------------------------------------
def _problems(**data):
    cfg = {
        "model": {"name": "unet", "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}},
        "data": data,
    }
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    return "\n".join(info.value.problems)


def test_config_accepts_regions_and_an_ignore_label():
    cfg = load_config(
        {
            "model": {"name": "unet", "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}},
            "data": {"regions": [[1, 2], [2]], "ignore_label": 3},
        }
    )
    assert cfg["data"]["regions"] == [[1, 2], [2]] and cfg["data"]["ignore_label"] == 3
    assert load_config({})["data"]["regions"] is None


def test_config_names_what_is_wrong_with_regions():
    assert "expected a list of lists of integers" in _problems(regions=[1, 2])
    assert "not labels of the dataset" in _problems(regions=[[1, 5], [2]])  # the phantom has labels 1, 2
    assert "set model.args.num_classes: 3" in _problems(regions=[[1, 2], [2], [1]], regions_order=[1, 2, 1])
    assert "member of data.regions" in _problems(regions=[[1, 2], [2]], ignore_label=2)
    assert "set data.regions" in _problems(regions_order=[1])
    cfg = {
        "model": {"name": "unet", "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}},
        "data": {"regions": [[1, 2], [2]]},
        "training": {"loss": "focal"},
    }
    with pytest.raises(ConfigError, match="not defined for region training"):
        load_config(cfg)
    # label-based: the ignore label must be above the classes
    cfg = {"data": {"ignore_label": 2}}
    with pytest.raises(ConfigError, match=r"e\.g\. 3"):
        load_config(cfg)


# --- end to end -------------------------------------------------------------------------------------------
def _check_run(run_dir, folds=2):
    """result.json's dice_mean is the best epoch's val_dice (prediction without mirroring); returns
    the per-case rows of fold 0."""
    for k in range(folds):
        fold = run_dir / f"fold_{k}"
        result = json.loads((fold / "result.json").read_text())
        with (fold / "metrics.csv").open(newline="") as fh:
            history = list(csv.DictReader(fh))
        best = max(history, key=lambda r: float(r["val_dice"]))
        assert result["metrics"]["dice_mean"] == pytest.approx(float(best["val_dice"]), abs=1e-4)
    with (run_dir / "fold_0" / "cases.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _region_config(tiny_config, **extra):
    return tiny_config(
        model={
            "name": "unet",
            "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2, "features": [4, 8]},
        },
        data={
            "phantom": {"num_cases": 4, "shape": [16, 16, 16], "num_classes": 3, "seed": 1},
            "transforms": "mirror",
            "regions": [[1, 2], [2]],
        },
        **extra,
    )


def _check_region_prediction(run_dir):
    from delira.data import SyntheticPhantomDataset
    from delira.training.prediction import RunPredictor

    case = SyntheticPhantomDataset(num_cases=1, shape=(16, 16, 16), num_classes=3, seed=42)[0]
    predictor = RunPredictor(run_dir)
    labels, probs = predictor.predict_array(case["data"], case["spacing"])
    assert probs.shape == (2, 16, 16, 16) and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.max() <= 1
    assert not np.allclose(probs.sum(axis=0), 1.0)  # sigmoids, not a softmax
    if predictor.rule is None:
        expected = np.where(probs[1] > 0.5, 2, np.where(probs[0] > 0.5, 1, 0))
        np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) <= {0, 1, 2}
    return case, probs


def _check_region_files(run_dir, tmp_path, case, probs):
    """``predict`` on a NIfTI file: the label file is the painted regions, the saved probabilities
    are the region probabilities of :meth:`RunPredictor.predict_array`."""
    pytest.importorskip("nibabel", reason="NIfTI files need nibabel")
    from delira.io import Image, read_image, write_image
    from delira.training.prediction import predict

    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "case.nii.gz", Image(case["data"][0], case["spacing"]))
    (written,) = predict(
        run_dir, tmp_path / "in", tmp_path / "out", save_probabilities=True, postprocess=False, progress=False
    )
    saved = np.load(tmp_path / "out" / "case_probabilities.npz")["probabilities"]
    assert saved.shape == (2, 16, 16, 16)
    np.testing.assert_allclose(saved, probs, atol=1e-5)
    labels = np.asarray(read_image(written).array)
    np.testing.assert_array_equal(labels, np.where(saved[1] > 0.5, 2, np.where(saved[0] > 0.5, 1, 0)))


@torch_only
def test_region_run_torch_trains_evaluates_and_predicts(tmp_path, tiny_config):
    from delira.training.experiment import Experiment

    run_dir = tmp_path / "run"
    summary = Experiment(_region_config(tiny_config), run_dir=run_dir, verbose=False).kfold()
    rows = _check_run(run_dir)
    assert {"dice_region_0", "dice_region_1", "hd95_region_0", "nsd_region_1"} <= set(rows[0])
    assert "dice_class_1" not in rows[0]
    assert np.isfinite(summary["mean"]["dice_mean"])
    # the validation predictions saved for the postprocessing decision are painted labels
    for row in rows:  # each case's region Dice from its saved painted labels, by numpy
        with np.load(run_dir / "fold_0" / "validation" / f"{row['case_id']}.npz") as z:
            pred, ref = z["pred"].astype(np.int64), z["ref"].astype(np.int64)
        assert set(np.unique(pred)) <= {0, 1, 2}
        for r, region in enumerate([[1, 2], [2]]):
            expected = _np_dice_of_masks(np.isin(pred, region), np.isin(ref, region))
            assert float(row[f"dice_region_{r}"]) == pytest.approx(expected, abs=1e-6, nan_ok=True)
    _check_region_files(run_dir, tmp_path, *_check_region_prediction(run_dir))


@tf_only
def test_region_run_tf_trains_evaluates_and_predicts(tmp_path, tiny_config):
    pytest.importorskip("tensorflow", reason="the TensorFlow backend needs tensorflow")
    from delira.training.experiment import Experiment

    cfg = _region_config(tiny_config, backend="tf")
    cfg["training"] = {**cfg["training"], "device": "/CPU:0", "epochs": 1}
    run_dir = tmp_path / "run"
    Experiment(cfg, run_dir=run_dir, verbose=False).kfold()
    rows = _check_run(run_dir)
    assert {"dice_region_0", "dice_region_1"} <= set(rows[0])
    _check_region_prediction(run_dir)


class _Sparse:
    """The phantoms with the voxels of the first 5 planes labelled 3 (not annotated)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        sample = dict(self.base[i])
        seg = np.array(sample["seg"], copy=True)
        seg[:, :5] = 3
        sample["seg"] = seg
        return sample


@pytest.mark.parametrize("backend", ["torch", "tf"])
def test_ignore_label_run_scores_only_annotated_voxels(tmp_path, tiny_config, backend):
    pytest.importorskip("torch" if backend == "torch" else "tensorflow", reason=f"the {backend} backend")
    from delira.training.experiment import Experiment
    from delira.training.prediction import load_run_networks, predict_probabilities

    cfg = tiny_config(data={**tiny_config()["data"], "ignore_label": 3})
    if backend == "tf":
        cfg.update(backend="tf")
        cfg["training"] = {**cfg["training"], "device": "/CPU:0", "epochs": 1}
    run_dir = tmp_path / "run"
    exp = Experiment(cfg, run_dir=run_dir, verbose=False)
    data = _Sparse(exp.dataset())
    exp.kfold(data)
    rows = _check_run(run_dir)
    config, networks = load_run_networks(run_dir, folds=[0])
    by_id = {str(data[i]["case_id"]): data[i] for i in range(len(data))}
    for row in rows:
        sample = by_id[row["case_id"]]
        probs = predict_probabilities(networks, sample["data"], config)
        pred, ref = probs.argmax(0), np.asarray(sample["seg"])[0]
        keep = ref != 3
        for c in (1, 2):
            expected = _np_dice_of_masks((pred == c) & keep, (ref == c) & keep)
            value = float(row[f"dice_class_{c}"]) if row[f"dice_class_{c}"] not in ("", "nan") else np.nan
            assert value == pytest.approx(expected, abs=1e-6, nan_ok=True)


def test_regions_are_checked_against_the_labels_a_dataset_declares():
    from delira.training.tasks import task_for

    class _Declared:  # an MSD dataset's label names, behind a subset-like wrapper
        def __init__(self):
            self.label_names = {0: "background", 1: "edema", 2: "core"}

    class _Subset:
        def __init__(self):
            self.dataset = _Declared()

    cfg = load_config(
        {
            "model": {"name": "unet", "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}},
            "data": {"phantom": {"num_classes": 4}, "regions": [[1, 3], [3]]},
        }
    )
    with pytest.raises(ValueError, match=r"labels \[3\] are not labels of the dataset \(\[1, 2\]\)"):
        task_for(cfg).check_dataset_labels(_Subset())
    task_for(cfg).check_dataset_labels(object())  # no declared labels: nothing to check


@torch_only
def test_sigmoid_output_of_the_predictor_is_the_sigmoid_of_the_mean_logits():
    import torch

    from delira.training.predictor import Predictor

    class _Net(torch.nn.Module):
        def forward(self, x):
            return torch.cat([3 * x, -x + 0.5], dim=1)

    rng = np.random.default_rng(8)
    volume = rng.normal(size=(1, 6, 5)).astype(np.float32)
    probs = Predictor(_Net(), patch_size=None, mirror_axes=(0,), output="sigmoid").predict(volume)
    logits = np.concatenate([3 * volume, -volume + 0.5])  # pointwise: mirroring gives the same logits
    np.testing.assert_allclose(probs, _sigmoid(logits.astype(np.float64)), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="'sigmoid' \\(regions\\)"):
        Predictor(_Net(), output="softmax")


def test_region_probabilities_go_back_to_the_original_grid_with_zero_outside_the_crop():
    from delira.data import Preprocessor
    from delira.training.prediction import invert_output

    data = np.zeros((1, 12, 10, 8), np.float32)
    data[0, 3:9, 2:8, 1:7] = np.random.default_rng(9).uniform(1, 2, size=(6, 6, 6))
    sample = {"data": data, "spacing": (1.0, 1.0, 1.0), "case_id": "c"}
    pre = Preprocessor(target_spacing=None, normalization="none", crop_nonzero=True)(sample)
    shape = np.asarray(pre["data"]).shape[1:]
    assert shape == (6, 6, 6)
    region_probs = np.random.default_rng(10).uniform(size=(2, *shape)).astype(np.float32)
    config = {"data": {"regions": [[1, 2], [2]]}}
    back = invert_output(region_probs, pre["properties"], config)
    assert back.shape == (2, 12, 10, 8)
    np.testing.assert_allclose(back[:, 3:9, 2:8, 1:7], region_probs, atol=1e-6)
    outside = np.ones((12, 10, 8), bool)
    outside[3:9, 2:8, 1:7] = False
    assert np.all(back[:, outside] == 0)
    # class probabilities: the background is 1 outside the crop
    classes = invert_output(np.stack([1 - region_probs[0], region_probs[0]]), pre["properties"], {"data": {}})
    assert np.all(classes[0, outside] == 1) and np.all(classes[1, outside] == 0)


def test_the_brats_example_of_the_docs_is_a_valid_config():
    import re
    from pathlib import Path

    import yaml

    text = (Path(__file__).parents[2] / "docs" / "regions.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    cfg = load_config(yaml.safe_load(block))
    assert cfg["data"]["regions"] == BRATS and cfg["model"]["args"]["num_classes"] == len(BRATS)
    assert default_regions_order(cfg["data"]["regions"]) == cfg["data"]["regions_order"]


def test_regions_are_checked_against_an_msd_folders_labels(tmp_path):
    """Preprocessed MSD cases keep no link to dataset.json: the task reads the folder's labels."""
    from delira.training.tasks import task_for
    from tests.training.test_shipped_configs import write_msd_task

    write_msd_task(tmp_path / "Task", num_cases=2)  # labels 1 spheres, 2 ellipsoids
    cfg = load_config(
        {
            "model": {"name": "unet", "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}},
            "data": {"kind": "decathlon", "path": str(tmp_path / "Task"), "regions": [[1, 3], [3]]},
        }
    )
    with pytest.raises(ValueError, match=r"labels \[3\] are not labels of the dataset \(\[1, 2\]\)"):
        task_for(cfg).check_dataset_labels([{"data": np.zeros((1, 2, 2, 2))}])
    cfg["data"]["regions"] = [[1, 2], [2]]
    task_for(cfg).check_dataset_labels([{"data": np.zeros((1, 2, 2, 2))}])


def test_regions_and_ignore_label_are_segmentation_only():
    cfg = {"task": "classification", "model": {"name": "resnet18", "args": {}}, "data": {"ignore_label": 3}}
    with pytest.raises(ConfigError, match="segmentation only"):
        load_config(cfg)
