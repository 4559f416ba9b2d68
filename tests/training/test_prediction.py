"""Prediction helpers: test-time mirroring axes, 2D runs predicting slices of 3D volumes, the fold
ensemble, and clear errors for inputs that cannot be predicted."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the networks here are PyTorch modules")

from delira.training.config import load_config  # noqa: E402
from delira.training.prediction import predict_probabilities, tta_axes  # noqa: E402


class _Linear(torch.nn.Module):
    """Logits = a fixed linear map of the channels plus a position-dependent term (so mirroring
    matters): (N, C, *spatial) -> (N, K, *spatial)."""

    def __init__(self, spatial_dims: int, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(k, 1, generator=g))
        self.dims = spatial_dims

    def forward(self, x):
        logits = torch.einsum("kc,nc...->nk...", self.weight, x)
        ramp = torch.arange(x.shape[2], dtype=x.dtype).reshape(1, 1, -1, *([1] * (self.dims - 1)))
        return logits + 0.1 * ramp


def _softmax(z, axis=0):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _reference(net, volume, mirror_first_axis):
    """Whole-volume logits (the window covers the volume), mirrored along spatial axis 0 or not."""
    x = torch.from_numpy(volume[None])
    with torch.no_grad():
        logits = net(x)[0].numpy()
        if mirror_first_axis:
            flipped = net(torch.flip(x, dims=(2,)))[0].numpy()[:, ::-1]
            logits = 0.5 * (logits + flipped)
    return _softmax(logits)


def _config(**data):
    cfg = {
        "model": {"name": "unet", "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3}},
        "data": {"phantom": {"shape": [8, 6, 4]}, **data},
    }
    return load_config(cfg)


def test_tta_axes_follow_the_training_mirroring():
    assert tta_axes(_config()) == (0, 1, 2)  # canonical augmentation mirrors every axis
    assert tta_axes(_config(augmentation={"mirror_axes": [0, 1]})) == (0, 1)
    assert tta_axes(_config(transforms="none")) == ()
    assert tta_axes(_config(transforms="none"), mirror=True) == (0, 1, 2)
    assert tta_axes(_config(), mirror=False) == ()


def test_ensemble_averages_probabilities_with_mirroring():
    cfg = _config(augmentation={"mirror_axes": [0]})
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, 8, 6, 4)).astype(np.float32)
    nets = [_Linear(3, seed=1), _Linear(3, seed=2)]
    got = predict_probabilities(nets, volume, cfg)
    expected = np.mean([_reference(n, volume, True) for n in nets], axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    plain = predict_probabilities(nets, volume, cfg, mirror=False)
    np.testing.assert_allclose(
        plain, np.mean([_reference(n, volume, False) for n in nets], axis=0), atol=1e-5
    )


@pytest.mark.parametrize("axis", [0, 2])
def test_a_2d_run_predicts_every_slice_along_the_slice_axis(axis):
    cfg = load_config(
        {
            "model": {"name": "unet", "args": {"spatial_dims": 2, "in_channels": 1, "num_classes": 3}},
            "data": {
                "kind": "decathlon",
                "path": "/nonexistent",
                "spatial_dims": 2,
                "slice_axis": axis,
                "patch_size": [8, 8],
                "transforms": "none",
            },
        }
    )
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(1, 5, 8, 8) if axis == 0 else (1, 8, 8, 5)).astype(np.float32)
    net = _Linear(2, seed=3)
    got = predict_probabilities([net], volume, cfg)
    assert got.shape == (3, *volume.shape[1:])
    for i in range(5):
        plane = np.take(volume, i, axis=1 + axis)
        np.testing.assert_allclose(np.take(got, i, axis=1 + axis), _reference(net, plane, False), atol=1e-5)


def test_a_2d_run_refuses_a_2d_volume():
    cfg = load_config(
        {
            "model": {"name": "unet", "args": {"spatial_dims": 2, "in_channels": 1, "num_classes": 3}},
            "data": {"kind": "decathlon", "path": "/x", "spatial_dims": 2, "patch_size": [8, 8]},
        }
    )
    with pytest.raises(ValueError, match="needs \\(C, x, y, z\\) volumes"):
        predict_probabilities([_Linear(2)], np.zeros((1, 8, 8), np.float32), cfg)


def test_predict_lists_what_is_wrong_with_the_input(tmp_path):
    from delira.training.prediction import predict

    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict(tmp_path / "run", tmp_path / "missing.nii.gz", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image file"):
        predict(tmp_path / "run", tmp_path / "empty", tmp_path / "out")


def test_load_run_networks_finds_runs_of_any_name(tmp_path):
    """A run folder named unlike its config, folds numbered past 9 and a model of
    ``Experiment.run(name=...)``: every trained model is found, folds in numeric order, named runs
    after them, the best checkpoint preferred over the last."""
    from delira.io import save_checkpoint
    from delira.training.builders import build_network
    from delira.training.config import dump_config
    from delira.training.prediction import load_run_networks

    cfg = load_config(
        {
            "name": "tiny-config-name",
            "model": {
                "name": "unet",
                "args": {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "features": [2, 4]},
            },
            "data": {"phantom": {"shape": [8, 8]}},
        }
    )
    run_dir = tmp_path / "renamed after the fact"
    run_dir.mkdir()
    dump_config(cfg, run_dir / "config.yaml")
    saved = {}
    for seed, (folder, name) in enumerate(
        [("fold_10", "best"), ("fold_2", "last"), ("my-model", "best"), ("fold_2", "best")]
    ):
        torch.manual_seed(seed)
        net = build_network(cfg)
        (run_dir / folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_checkpoint(run_dir / folder / "checkpoints" / f"{name}.safetensors", net)
        saved[(folder, name)] = [p.detach().clone() for p in net.parameters()]
    (run_dir / "fold_3").mkdir()  # no checkpoints/: not a trained model
    (run_dir / "validation").mkdir()

    config, networks = load_run_networks(run_dir)
    assert config["name"] == "tiny-config-name"
    expected = [saved[("fold_2", "best")], saved[("fold_10", "best")], saved[("my-model", "best")]]
    assert len(networks) == 3
    for net, params in zip(networks, expected):
        assert not net.training
        assert all(torch.equal(a, b) for a, b in zip(net.parameters(), params))
    _, only = load_run_networks(run_dir, folds=[10])
    assert len(only) == 1 and all(torch.equal(a, b) for a, b in zip(only[0].parameters(), expected[1]))
    with pytest.raises(FileNotFoundError, match="no checkpoint for folds \\[4\\]"):
        load_run_networks(run_dir, folds=[4])
