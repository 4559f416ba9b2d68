"""delira.augment inside delira.data's loader: batch i of epoch e is the same for any number of workers."""

from __future__ import annotations

import numpy as np

import delira.augment as da
from delira.data import DataLoader, SyntheticPhantomDataset


def _pipeline():
    return da.Compose(
        [
            da.SpatialTransform(
                (16, 16, 16),
                rotation=(-30, 30),
                scale=(0.8, 1.2),
                elastic_alpha=(0, 900),
                elastic_sigma=(9, 13),
            ),
            da.GaussianNoise((0, 0.1)),
            da.Gamma(),
            da.Mirror(),
        ],
        seed=0,
    )


def _epoch(num_workers: int, epoch: int) -> list[dict]:
    dataset = SyntheticPhantomDataset(num_cases=6, shape=(24, 24, 24), num_classes=3, seed=1)
    loader = DataLoader(
        dataset, batch_size=2, transforms=_pipeline(), num_workers=num_workers, seed=3, shuffle=True
    )
    try:
        loader.set_epoch(epoch)
        return [{k: np.array(v) for k, v in b.items() if k in ("data", "seg")} for b in loader]
    finally:
        loader.close()


def test_augmented_batches_are_identical_for_0_and_2_workers():
    inline, workers = _epoch(0, 1), _epoch(2, 1)
    assert len(inline) == len(workers) == 3
    for a, b in zip(inline, workers):
        assert a["data"].shape == (2, 1, 16, 16, 16) and a["seg"].dtype == b["seg"].dtype
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["seg"], b["seg"])
    # another epoch draws other augmentation parameters
    assert not np.array_equal(_epoch(0, 2)[0]["data"], inline[0]["data"])
    # labels stay labels: nothing outside the phantom's classes appears
    assert set(np.unique(np.concatenate([b["seg"].ravel() for b in inline]))) <= {0, 1, 2}


def _thread_count_batch(data, seg, **rest):
    return {"data": data, "seg": seg, "threads": np.full(data.shape[0], da.get_num_threads()), **rest}


def test_workers_use_one_augment_thread_unless_configured(monkeypatch):
    dataset = SyntheticPhantomDataset(num_cases=2, shape=(8, 8, 8), num_classes=2, seed=0)
    loader = DataLoader(dataset, batch_size=2, transforms=_thread_count_batch, num_workers=1, seed=0)
    try:
        assert next(iter(loader))["threads"].tolist() == [1, 1]
    finally:
        loader.close()
    monkeypatch.setenv("DELIRA_AUGMENT_NUM_THREADS", "2")
    # spawn: a fresh process sees the current environment (a running forkserver keeps its own)
    loader = DataLoader(
        dataset, batch_size=2, transforms=_thread_count_batch, num_workers=1, seed=0, start_method="spawn"
    )
    try:
        assert next(iter(loader))["threads"].tolist() == [2, 2]
    finally:
        loader.close()
