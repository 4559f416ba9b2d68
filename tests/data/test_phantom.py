"""The synthetic phantom dataset: deterministic, file-free, and learnable."""

from __future__ import annotations

import numpy as np
import pytest

from delira.data import SyntheticPhantomDataset
from delira.data.phantom import class_intensity


def test_cases_depend_only_on_seed_and_index():
    a = SyntheticPhantomDataset(num_cases=5, shape=(24, 24, 24), seed=3)
    b = SyntheticPhantomDataset(num_cases=5, shape=(24, 24, 24), seed=3)
    later = b[4]  # access order does not matter
    np.testing.assert_array_equal(a[4]["data"], later["data"])
    np.testing.assert_array_equal(a[4]["seg"], later["seg"])
    assert not np.array_equal(a[3]["data"], a[4]["data"])
    c = SyntheticPhantomDataset(num_cases=5, shape=(24, 24, 24), seed=4)
    assert not np.array_equal(a[4]["data"], c[4]["data"])


@pytest.mark.parametrize("shape", [(32, 32), (20, 24, 28)])
def test_sample_convention_and_all_classes_present(shape):
    ds = SyntheticPhantomDataset(num_cases=3, shape=shape, num_classes=4)
    s = ds[1]
    assert s["data"].shape == (1, *shape) and s["data"].dtype == np.float32
    assert s["seg"].shape == (1, *shape) and s["seg"].dtype == np.int16
    assert s["case_id"] == "phantom_0001" and s["spacing"] == (1.0,) * len(shape)
    assert set(np.unique(s["seg"])) == {0, 1, 2, 3}


def test_classification_variant():
    ds = SyntheticPhantomDataset(num_cases=6, shape=(16, 16, 16), num_classes=3, task="classification")
    assert ds.labels == [0, 1, 2, 0, 1, 2]
    s = ds[4]
    assert s["label"] == 1 and "seg" not in s
    # label 1 looks like object class 2 of 4 levels: brightness 0.2 + 0.8 * 2 / 3
    bright = s["data"][0] > 0.45
    assert bright.any()
    assert abs(float(np.median(s["data"][0][bright])) - class_intensity(2, 4)) < 0.12


def dice(pred, ref, label):
    p, r = pred == label, ref == label
    return 2 * np.logical_and(p, r).sum() / (p.sum() + r.sum())


def test_learnable_a_per_voxel_intensity_rule_fitted_on_train_cases_segments_test_cases():
    """If thresholds between class means learnt on training cases already give a high Dice on
    held-out cases, a small UNet (which also sees shape and context) learns the task easily."""
    ds = SyntheticPhantomDataset(num_cases=8, shape=(32, 32, 32), num_classes=3, seed=0)
    train, test = [ds[i] for i in range(4)], [ds[i] for i in range(4, 8)]
    means = [np.mean(np.concatenate([s["data"][s["seg"] == c] for s in train])) for c in range(3)]
    # background mixes air (0) and body (0.2): classify foreground by thresholds between class means
    t1, t2 = (means[1] + 0.2) / 2, (means[1] + means[2]) / 2
    scores = []
    for s in test:
        x = s["data"][0]
        pred = np.where(x > t2, 2, np.where(x > t1, 1, 0))
        scores.append([dice(pred, s["seg"][0], c) for c in (1, 2)])
    assert np.mean(scores) > 0.85, scores


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_cases"):
        SyntheticPhantomDataset(num_cases=0)
    with pytest.raises(ValueError, match="shape"):
        SyntheticPhantomDataset(shape=(4, 4))
    with pytest.raises(ValueError, match="task"):
        SyntheticPhantomDataset(task="detection")


@pytest.mark.torch
def test_learnable_by_a_small_convolutional_network():
    """A three-layer CNN trained for a few seconds on 2D phantoms segments held-out phantoms."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    ds = SyntheticPhantomDataset(num_cases=12, shape=(32, 32), num_classes=3, seed=1)
    x = torch.from_numpy(np.stack([ds[i]["data"] for i in range(12)]))
    y = torch.from_numpy(np.stack([ds[i]["seg"][0] for i in range(12)]).astype(np.int64))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 3, 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x[:8]), y[:8])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = net(x[8:]).argmax(1).numpy()
    scores = [dice(pred[k], y[8 + k].numpy(), c) for k in range(4) for c in (1, 2)]
    assert np.mean(scores) > 0.8, scores
