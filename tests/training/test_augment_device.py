"""``data.augment_device``: the training augmentation in the loader (cpu) or on the training batch
inside the trainer (cuda), validated with the config and refused clearly where no GPU can run it."""

from __future__ import annotations

import numpy as np
import pytest

from delira.training.config import ConfigError, load_config

pytest.importorskip("torch", reason="the Experiment tests train PyTorch networks")


@pytest.fixture
def _config(tiny_config):
    """``make(**training)``: the tiny experiment with the canonical augmentation on the GPU."""
    return lambda **training: tiny_config(
        data={"transforms": "canonical", "augment_device": "cuda"},
        training={"device": "cuda", "epochs": 1, **training},
    )


def test_cuda_augmentation_needs_a_gpu_training_device(_config):
    with pytest.raises(ConfigError) as info:
        load_config(_config(device="cpu"))
    message = str(info.value)
    assert "data.augment_device" in message and "training.device" in message and "'cpu'" in message
    assert load_config(_config())["data"]["augment_device"] == "cuda"
    tf_config = {**_config(device="/GPU:0"), "backend": "tf"}
    assert load_config(tf_config)["training"]["device"] == "/GPU:0"
    with pytest.raises(ConfigError, match=r"training\.device"):
        load_config({**_config(device="/CPU:0"), "backend": "tf"})
    assert load_config({})["data"]["augment_device"] == "cpu"  # the default stays in the loader


def test_without_a_usable_gpu_the_run_stops_before_training_with_the_fix(tmp_path, _config):
    import delira.augment as da
    from delira.augment import _extension
    from delira.training.experiment import Experiment

    module = _extension._C
    if module is not None and hasattr(module, "cuda_device_count") and module.cuda_device_count()[0] > 0:
        pytest.skip("a GPU is visible: the refusal is for machines without one")
    experiment = Experiment(_config(), run_dir=tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError) as info:
        experiment.kfold()
    message = str(info.value)
    assert "data.augment_device: cuda" in message and "data.augment_device=cpu" in message
    assert da.build_info()["cuda_compiled"] == ("built without CUDA" not in message)
    assert not list((tmp_path / "run").glob("fold_*/checkpoints/*.safetensors"))  # nothing trained


def test_the_trainer_runs_the_augmentation_on_the_prepared_batch(tmp_path, monkeypatch, _config):
    """The device path's plumbing, exercised on the CPU: the loader carries no augmentation, the
    trainer applies the canonical Compose to every prepared (torch) training batch, with the draws
    seeded per epoch, iteration and transform, and the fold trains."""
    import torch

    import delira.training.tasks as tasks
    from delira.data import Subset
    from delira.training.builders import build_dataset
    from delira.training.experiment import Experiment

    calls = []
    made = []
    real_build = tasks.build_transforms

    def build_on_cpu(config, shape, seed=0, backend=None):
        made.append(backend)
        compose = real_build(config, shape, seed=seed, backend="cpu")  # the CPU executor stands in

        def spy(rng=None, **batch):
            calls.append((type(batch["data"]), tuple(batch["data"].shape), rng.bit_generator.state["state"]))
            return compose(rng=rng, **batch)

        return spy

    monkeypatch.setattr(tasks, "build_transforms", build_on_cpu)
    monkeypatch.setattr(tasks, "check_augment_device", lambda config: None)
    experiment = Experiment(_config(), run_dir=tmp_path / "run", verbose=False)
    experiment.config["training"]["device"] = "cpu"  # this machine's stand-in for the GPU

    loader_transforms = []
    real_loaders = experiment.task._build_loaders

    def spy_loaders(train, val, transforms, *args):
        loader_transforms.append(list(transforms))
        return real_loaders(train, val, transforms, *args)

    monkeypatch.setattr(experiment.task, "_build_loaders", spy_loaders)
    data = build_dataset(experiment.config)
    result = experiment.run(Subset(data, [0, 1]), Subset(data, [2, 3]), name="run")
    assert made == ["cuda"], "the trainer's augmentation must ask for the CUDA executor"
    assert loader_transforms == [[]], "the loader must not augment as well"
    assert len(calls) == 1, "one training batch of 2 cases in one epoch"
    assert all(kind is torch.Tensor and shape == (2, 1, 16, 16, 16) for kind, shape, _ in calls)
    assert result["epochs"] == 1 and np.isfinite(result["metrics"]["dice_mean"])
    losses = [float(row["train_loss"]) for row in _csv(tmp_path / "run" / "run" / "metrics.csv")]
    assert losses and all(np.isfinite(losses))


def _csv(path):
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_gan_scaling_after_a_device_augmentation_matches_the_loader_one():
    """The GAN's scaling to [-1, 1] runs after the augmentation, so on the device it gets tensors:
    the torch result equals the numpy one (an independent min-max computed here)."""
    import torch

    from delira.training.tasks import _ScaleToUnit

    data = np.random.default_rng(0).normal(3.0, 2.0, size=(3, 1, 4, 5, 6)).astype(np.float32)
    lo = data.reshape(3, -1).min(1)[:, None, None, None, None]
    hi = data.reshape(3, -1).max(1)[:, None, None, None, None]
    want = 2.0 * (data - lo) / (hi - lo) - 1.0
    np.testing.assert_allclose(_ScaleToUnit()(data=data)["data"], want, rtol=1e-6, atol=1e-6)
    out = _ScaleToUnit()(data=torch.from_numpy(data), seg=None)
    assert isinstance(out["data"], torch.Tensor) and out["seg"] is None
    np.testing.assert_allclose(out["data"].numpy(), want, rtol=1e-6, atol=1e-6)
