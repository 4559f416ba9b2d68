"""Task strategies: the registry, each task's losses, metrics, monitor, loaders, transforms, callbacks
and evaluation, checked against numpy references and hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from delira.training.config import load_config
from delira.training.tasks import (
    TASKS,
    ClassificationTask,
    GanTask,
    SegmentationTask,
    Task,
    task_for,
)

SEG = {
    "name": "seg",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {
        "phantom": {"num_cases": 4, "shape": [16, 16, 16], "num_classes": 3, "seed": 1},
        "transforms": "none",
    },
    "training": {"batch_size": 2},
}
CLS = {
    "name": "cls",
    "task": "classification",
    "model": {
        "name": "resnet18",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "width": 4},
    },
    "data": {
        "phantom": {"num_cases": 6, "shape": [16, 16, 16], "num_classes": 3, "seed": 0},
        "transforms": "none",
    },
    "training": {"batch_size": 2},
}
GAN = {
    "name": "gan",
    "task": "gan",
    "model": {
        "name": "dcgan",
        "args": {
            "spatial_dims": 2,
            "channels": 1,
            "image_size": 16,
            "latent_dim": 8,
            "generator_features": 8,
            "discriminator_features": 8,
        },
    },
    "data": {
        "phantom": {"num_cases": 6, "shape": [16, 16], "num_classes": 3, "seed": 0},
        "transforms": "none",
    },
    "training": {"batch_size": 4},
    "experiment": {"folds": 1, "seed": 3},
}


def _merge(base, **sections):
    import json

    out = json.loads(json.dumps(base))
    for section, values in sections.items():
        out.setdefault(section, {}).update(values)
    return load_config(out)


def test_task_for_picks_one_class_per_task_from_the_registry():
    assert set(TASKS) == {"segmentation", "classification", "gan"}
    assert type(task_for(load_config(SEG))) is SegmentationTask
    assert type(task_for(load_config(CLS))) is ClassificationTask
    assert type(task_for(load_config(GAN))) is GanTask
    assert all(issubclass(cls, Task) and cls.name == key for key, cls in TASKS.items())
    with pytest.raises(ValueError, match=r"task 'detection' is not known; set task to one of"):
        task_for({"task": "detection"})


def test_monitor_defaults_and_overrides():
    assert task_for(load_config(SEG)).monitor() == ("val_dice", "max")
    assert task_for(load_config(CLS)).monitor() == ("val_accuracy", "max")
    assert task_for(load_config(GAN)).monitor() == ("train_loss", "min")
    assert task_for(_merge(SEG, training={"monitor": "val_loss"})).monitor() == ("val_loss", "min")
    assert task_for(_merge(SEG, training={"monitor": "val_ce", "mode": "max"})).monitor() == ("val_ce", "max")


def test_fold_seed_and_input_shapes():
    seg, gan = task_for(_merge(SEG, experiment={"seed": 7})), task_for(load_config(GAN))
    assert seg.fold_seed(2) == 7002 and gan.fold_seed(0) == 3000
    assert seg.input_shape() == (1, 16, 16, 16)
    assert gan.input_shape() == (8,)  # the generator's latent vector
    assert task_for(_merge(SEG, data={"patch_size": [8, 8, 8]})).input_shape() == (1, 8, 8, 8)


def test_scale_to_unit_matches_a_numpy_min_max():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(3, 1, 5, 6)).astype(np.float32)
    (scale,) = task_for(load_config(GAN)).transforms()
    out = scale(data=data, extra="kept")
    assert out["extra"] == "kept" and out["data"].dtype == np.float32
    for i in range(3):
        lo, hi = data[i].min(), data[i].max()
        np.testing.assert_allclose(out["data"][i], 2 * (data[i] - lo) / (hi - lo) - 1, atol=1e-6)
    assert task_for(load_config(SEG)).transforms() == []


def test_losses_per_task_and_backend():
    torch = pytest.importorskip("torch")
    seg = task_for(_merge(SEG, training={"loss": "ce+dice"})).losses("torch")
    assert list(seg) == ["ce", "dice"]
    assert list(task_for(_merge(SEG, training={"loss": "dice"})).losses("torch")) == ["dice"]
    assert list(task_for(load_config(CLS)).losses("torch")) == ["ce"]
    gan = task_for(load_config(GAN)).losses("torch")
    logits, target = torch.tensor([0.3, -1.2]), torch.tensor([1.0, 0.0])
    expected = -np.mean(np.log([1 / (1 + np.exp(-0.3)), 1 - 1 / (1 + np.exp(1.2))]))
    assert float(gan["adversarial"](logits, target)) == pytest.approx(expected, rel=1e-6)
    # the cross-entropy of a classifier: -log softmax of the true class
    z = torch.tensor([[1.0, 2.0, 0.5]])
    ce = float(task_for(load_config(CLS)).losses("torch")["ce"](z, torch.tensor([1])))
    assert ce == pytest.approx(-np.log(np.exp(2.0) / np.exp([1.0, 2.0, 0.5]).sum()), rel=1e-6)


def test_training_metrics_per_task():
    assert list(task_for(load_config(SEG)).training_metrics()) == ["dice"]
    assert list(task_for(load_config(CLS)).training_metrics()) == ["accuracy"]
    assert task_for(load_config(GAN)).training_metrics() is None


def test_gan_callbacks_write_samples_into_the_fold_folder(tmp_path):
    from delira.training.callbacks import GanSampleGrid

    gan = task_for(load_config(GAN))
    (grid,) = gan.callbacks(tmp_path / "fold_0", 0)
    assert isinstance(grid, GanSampleGrid)
    assert grid.folder == tmp_path / "fold_0" / "samples" and grid.num_samples == 16 and grid.seed == 3000
    assert gan.callbacks(None, 0) == []
    assert task_for(load_config(SEG)).callbacks(tmp_path, 0) == []


def test_loaders_of_each_task():
    from delira.data import SyntheticPhantomDataset

    gan_cfg = load_config(GAN)
    data = SyntheticPhantomDataset(num_cases=6, shape=(16, 16), num_classes=3, seed=0)
    train, val = task_for(gan_cfg).loaders(data, data, fold=0)
    assert val is None  # a GAN has no validation loss
    batches = list(train)
    assert len(batches) == 1 and batches[0]["data"].shape == (4, 1, 16, 16)  # drop_last: 6 // 4
    d = np.asarray(batches[0]["data"])
    np.testing.assert_allclose(d.reshape(4, -1).min(axis=1), -1.0, atol=1e-6)
    np.testing.assert_allclose(d.reshape(4, -1).max(axis=1), 1.0, atol=1e-6)

    seg_cfg = _merge(SEG, data={"patch_size": [8, 8, 8]})
    vol = SyntheticPhantomDataset(num_cases=4, shape=(16, 16, 16), num_classes=3, seed=1)
    train, val = task_for(seg_cfg).loaders(vol, vol, fold=1)
    first = next(iter(train))
    assert first["data"].shape == (2, 1, 8, 8, 8) and first["seg"].shape == (2, 1, 8, 8, 8)
    assert next(iter(val))["data"].shape[0] == 1

    # 2D training on slices of 3D volumes needs a 2D patch
    slices = task_for(
        _merge(
            SEG,
            model={"name": "unet", "args": {"spatial_dims": 2, "in_channels": 1, "num_classes": 3}},
            data={"kind": "decathlon", "path": "/x", "spatial_dims": 2},
        )
    )
    with pytest.raises(ValueError, match=r"trains on 2D patches of slices; set data\.patch_size"):
        slices.loaders(vol, vol, fold=0)


class _FakeTrainer:
    def __init__(self):
        self.history = [
            {"epoch": 0, "train_loss": 2.0, "train_adversarial": 1.5, "lr": 0.1},
            {"epoch": 1, "train_loss": 1.25, "train_adversarial": 0.75, "lr": 0.1},
        ]


def test_gan_evaluation_is_the_last_epochs_training_losses():
    gan = task_for(load_config(GAN))
    assert gan.evaluate([], None, _FakeTrainer()) == ({"train_loss": 1.25, "train_adversarial": 0.75}, [])
    assert gan.evaluate([], None, None) == ({}, [])


def test_classification_evaluation_averages_the_ensembles_logits():
    torch = pytest.importorskip("torch")

    class MeanLinear(torch.nn.Module):
        """Logits (N, 3) = w * mean(x) + b."""

        def __init__(self, w, b):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(w))
            self.b = torch.nn.Parameter(torch.tensor(b))

        def forward(self, x):
            return x.mean(dim=(1, 2, 3, 4))[:, None] * self.w + self.b

    w1, b1 = [1.0, 0.0, -1.0], [0.0, 0.5, 0.0]
    w2, b2 = [0.5, 0.0, -2.0], [0.0, 0.2, 0.1]
    nets = [MeanLinear(w1, b1), MeanLinear(w2, b2)]
    means = [2.0, 0.1, -3.0, 0.3]
    labels = [0, 1, 2, 0]
    data = [
        {"data": np.full((1, 4, 4, 4), m, np.float32), "label": y, "case_id": f"c{i}"}
        for i, (m, y) in enumerate(zip(means, labels))
    ]
    metrics, rows = task_for(load_config(CLS)).evaluate(nets, data)
    expected = []
    for m in means:
        logits = 0.5 * ((np.array(w1) * m + b1) + (np.array(w2) * m + b2))
        expected.append(int(np.argmax(logits)))
    assert [r["predicted"] for r in rows] == expected == [0, 1, 2, 1]
    assert [r["case_id"] for r in rows] == ["c0", "c1", "c2", "c3"]
    assert metrics == {"accuracy": pytest.approx(np.mean(np.array(expected) == labels))}
    assert all(n.training for n in nets)  # Predictor.forward restores the mode


def test_segmentation_evaluation_rows_and_means(tmp_path):
    torch = pytest.importorskip("torch")

    class Oracle(torch.nn.Module):
        """Logits = 10 * one-hot of round(x) (the phantom's intensity pattern is not used)."""

        def forward(self, x):
            labels = x[:, 0].round().long().clamp(0, 2)
            return 10.0 * torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()

    cfg = _merge(SEG, prediction={"mirror": False})
    ref = np.zeros((1, 16, 16, 16), np.int16)
    ref[0, 2:8, 2:8, 2:8] = 1
    ref[0, 10:14, 10:14, 10:14] = 2
    pred = ref.copy()
    pred[0, 2:8, 2:8, 2:5] = 0  # half of class 1 missed
    data = [{"data": pred.astype(np.float32), "seg": ref, "case_id": "a", "spacing": (1.0, 1.0, 1.0)}]
    metrics, rows = task_for(cfg).evaluate([Oracle()], data, save_dir=tmp_path)
    # hand-computed Dice: class 1 2*108/(216+108) = 2/3, class 2 exact
    assert rows[0]["dice_class_1"] == pytest.approx(2 / 3) and rows[0]["dice_class_2"] == pytest.approx(1.0)
    assert metrics["dice_mean"] == pytest.approx((2 / 3 + 1) / 2)
    saved = np.load(Path(tmp_path) / "validation" / "a.npz")
    np.testing.assert_array_equal(saved["pred"], pred[0])
    np.testing.assert_array_equal(saved["ref"], ref[0])
