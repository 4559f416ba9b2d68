"""Torch tensors and tf.data from the loader."""

from __future__ import annotations

import delira_data_testing as h
import numpy as np
import pytest

from delira.data import DataLoader, TorchLoader, to_tf_dataset, to_torch


def reference_batches(dataset, batch_size):
    return [
        {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in b.items()}
        for b in DataLoader(dataset, batch_size, transforms=h.add_rng_noise, seed=3)
    ]


@pytest.mark.torch
def test_to_torch_shares_memory_without_pinning():
    import torch

    batch = {"data": np.arange(6, dtype=np.float32).reshape(2, 1, 3), "case_id": ["a", "b"]}
    out = to_torch(batch)
    assert isinstance(out["data"], torch.Tensor) and out["data"].dtype == torch.float32
    assert out["data"].data_ptr() == batch["data"].ctypes.data  # no copy
    assert out["case_id"] == ["a", "b"]
    readonly = np.arange(3, dtype=np.int16)
    readonly.flags.writeable = False
    np.testing.assert_array_equal(to_torch({"x": readonly})["x"].numpy(), [0, 1, 2])


@pytest.mark.torch
def test_torch_loader_from_workers_matches_numpy(no_leaks):
    import torch

    dataset = h.ArangeDataset(5)
    loader = DataLoader(dataset, 2, transforms=h.add_rng_noise, seed=3, num_workers=2, timeout=60)
    got = []
    for b in TorchLoader(loader):
        got.append(b)
        no_leaks.extend(loader.worker_pids)
    expected = reference_batches(dataset, 2)
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        assert g["seg"].dtype == torch.int16
        np.testing.assert_array_equal(g["data"].numpy(), e["data"])
        np.testing.assert_array_equal(g["label"].numpy(), e["label"])
    del got


@pytest.mark.torch
def test_pinned_memory_needs_an_accelerator_or_copies_once():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs a CUDA device")
    batch = {"data": np.ones((2, 3), np.float32)}
    out = to_torch(batch, pin_memory=True)
    assert out["data"].is_pinned() and out["data"].data_ptr() != batch["data"].ctypes.data


@pytest.mark.tf
def test_tf_dataset_yields_the_loader_batches_and_advances_epochs():
    import tensorflow as tf

    dataset = h.ArangeDataset(5)
    loader = DataLoader(dataset, 2, transforms=h.add_rng_noise, seed=3)
    ds = to_tf_dataset(loader, keys=["data", "seg", "label", "case_id"])
    assert ds.element_spec["data"].shape.as_list() == [None, 1, 4, 4, 4]
    assert ds.element_spec["case_id"].dtype == tf.string
    got = list(ds.as_numpy_iterator())
    expected = reference_batches(dataset, 2)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g["data"], e["data"])
        np.testing.assert_array_equal(g["seg"], e["seg"])
        assert [c.decode() for c in g["case_id"]] == e["case_id"]
    assert loader.epoch == 1
    second = next(iter(ds.as_numpy_iterator()))
    loader_epoch1 = DataLoader(dataset, 2, transforms=h.add_rng_noise, seed=3)
    loader_epoch1.set_epoch(1)
    np.testing.assert_array_equal(second["data"], next(iter(loader_epoch1))["data"])
