"""Checkpoints of PyTorch models: contents, exact resume, mismatches, atomicity."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from delira.io import (
    CheckpointError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def _net(hidden: int = 16) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(6, hidden),
        torch.nn.BatchNorm1d(hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(hidden, 1),
    )


def _data():
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(48, 6, generator=g)
    return x, x[:, :1] * 2 - x[:, 1:2]


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global RNGs are what the checkpoint must restore)
    torch.manual_seed(seed)


def _train(model, optimizer, scheduler, epochs: int) -> None:
    """Uses all three global RNGs: torch (shuffle, dropout), numpy and Python (input jitter)."""
    x, y = _data()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        jitter = float(np.random.rand()) * 0.01 + random.random() * 0.01  # noqa: NPY002
        for start in range(0, len(x), 8):
            idx = order[start : start + 8]
            loss = torch.nn.functional.mse_loss(model(x[idx] + jitter), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()


def _setup(seed: int):
    torch.manual_seed(seed)
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return model, optimizer, scheduler


def _resumed(tmp_path, restore_rng: bool):
    _seed_all(0)
    model, optimizer, scheduler = _setup(0)
    _train(model, optimizer, scheduler, 2)
    save_checkpoint(tmp_path / "ckpt.safetensors", model, [optimizer, scheduler], epoch=2)
    _seed_all(99)  # a different process state: other seeds, other initial weights
    model, optimizer, scheduler = _setup(99)
    info = load_checkpoint(
        tmp_path / "ckpt.safetensors", model, [optimizer, scheduler], restore_rng=restore_rng
    )
    assert info.epoch == 2
    _train(model, optimizer, scheduler, 2)
    return model


def test_resume_gives_the_same_weights_as_training_straight(tmp_path):
    _seed_all(0)
    straight, optimizer, scheduler = _setup(0)
    _train(straight, optimizer, scheduler, 4)
    resumed = _resumed(tmp_path, restore_rng=True)
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    # the comparison is sensitive: without the RNG states the runs part ways
    diverged = _resumed(tmp_path, restore_rng=False)
    assert not torch.equal(straight[0].weight, diverged[0].weight)


def test_contents_round_trip(tmp_path):
    model, optimizer, scheduler = _setup(0)
    _train(model, optimizer, scheduler, 1)
    extra = {
        "array": np.arange(6.0).reshape(2, 3),
        "tensor": torch.ones(2, dtype=torch.int64),
        "pair": (1, "a"),
        3: None,
    }
    config = {"model": {"hidden": 16}, "lr": 0.01, "folds": [0, 1]}
    save_checkpoint(
        tmp_path / "c.safetensors",
        model,
        {"adam": optimizer, "step": scheduler},
        epoch=np.int64(7),
        metrics={"loss": torch.tensor(0.25), "dice": np.float32(0.5), "nan": float("nan")},
        extra=extra,
        config=config,
    )
    fresh, fresh_opt, fresh_sched = _setup(5)
    info = load_checkpoint(tmp_path / "c.safetensors", fresh, {"adam": fresh_opt, "step": fresh_sched})
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_sched.state_dict() == scheduler.state_dict()
    saved, loaded = optimizer.state_dict(), fresh_opt.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    for index, slots in saved["state"].items():
        for name, value in slots.items():
            assert torch.equal(loaded["state"][index][name], value)
    assert info.epoch == 7 and type(info.epoch) is int
    assert info.metrics["loss"] == 0.25 and info.metrics["dice"] == 0.5 and np.isnan(info.metrics["nan"])
    assert info.config == config
    np.testing.assert_array_equal(info.extra["array"], extra["array"])
    assert torch.equal(info.extra["tensor"], extra["tensor"])
    assert info.extra["pair"] == (1, "a") and info.extra[3] is None
    assert info.framework == "torch" and info.format_version == 1
    assert info.versions["torch"] == torch.__version__ and "delira-io" in info.versions
    assert read_checkpoint_info(tmp_path / "c.safetensors").metrics["loss"] == 0.25


def test_rng_states_are_restored(tmp_path):
    model = _net()
    generator = np.random.default_rng(5)
    _seed_all(3)
    save_checkpoint(tmp_path / "c.safetensors", model, generators={"data": generator})
    expected = (random.random(), np.random.rand(), torch.rand(3), generator.random())  # noqa: NPY002
    _seed_all(4)
    generator.random(10)
    load_checkpoint(tmp_path / "c.safetensors", model, generators={"data": generator})
    got = (random.random(), np.random.rand(), torch.rand(3), generator.random())  # noqa: NPY002
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    assert got[3] == expected[3]


def test_mismatched_model_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", _net(16))
    other = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.BatchNorm1d(32))
    other.add_module("head", torch.nn.Linear(32, 1))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(tmp_path / "c.safetensors", other)
    error = info.value
    assert error.missing == ["head.weight", "head.bias"]
    assert sorted(error.unexpected) == ["4.bias", "4.weight"]
    assert error.mismatched["0.weight"] == ((16, 6), (32, 6))
    assert set(error.mismatched) == {
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
    }
    for text in (
        "head.weight",
        "4.bias",
        "'0.weight' is [16, 6] in the checkpoint, [32, 6] in the model",
        "strict=False",
    ):
        assert text in str(error)
    for key, value in other.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[key])


def test_non_strict_load_takes_the_matching_keys(tmp_path):
    source = _net(16)
    save_checkpoint(tmp_path / "c.safetensors", source)
    target = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 2))
    info = load_checkpoint(tmp_path / "c.safetensors", target, strict=False)
    assert torch.equal(target[0].weight, source[0].weight)
    assert info.missing_keys == ["2.weight", "2.bias"]
    assert sorted(info.unexpected_keys) == ["4.bias", "4.weight"]


def test_wrappers_are_unwrapped(tmp_path):
    model = _net()
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.DataParallel(model))
    fresh = _net()
    load_checkpoint(tmp_path / "c.safetensors", fresh)  # keys without "module."
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_tied_weights_are_saved(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight
    save_checkpoint(tmp_path / "c.safetensors", model)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    load_checkpoint(tmp_path / "c.safetensors", fresh)
    assert torch.equal(fresh[0].weight, model[0].weight) and torch.equal(fresh[1].weight, model[0].weight)


def test_optimizer_structure_must_match(tmp_path):
    model, optimizer, _ = _setup(0)
    save_checkpoint(tmp_path / "c.safetensors", model, {"adam": optimizer})
    with pytest.raises(CheckpointError, match=r"named \['adam'\].*named \['sgd'\]"):
        load_checkpoint(tmp_path / "c.safetensors", model, {"sgd": optimizer})
    other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "c.safetensors", model, {"adam": other})


def test_unstorable_extra_says_where_and_writes_nothing(tmp_path):
    with pytest.raises(CheckpointError, match=r"extra\['fn'\] is a .*function.*without pickle"):
        save_checkpoint(tmp_path / "c.safetensors", _net(), extra={"fn": len})
    assert os.listdir(tmp_path) == []


def test_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.safetensors") as info:
        load_checkpoint(tmp_path / "nope.safetensors", _net())
    assert isinstance(info.value, FileNotFoundError)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    model = _net()
    save_checkpoint(path, model, epoch=1)
    saved_weight = model[0].weight.detach().clone()
    from delira.io import _serialize

    def crash(self, target, metadata):
        target.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(_serialize.TensorStore, "save", crash)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    assert os.listdir(tmp_path) == ["c.safetensors"]  # the temporary file is gone
    monkeypatch.undo()
    fresh = _net()
    assert load_checkpoint(path, fresh).epoch == 1
    assert torch.equal(fresh[0].weight, saved_weight)
