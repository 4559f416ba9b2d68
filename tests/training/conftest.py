"""Shared fixtures of the trainer tests: a learnable synthetic segmentation task on 8^3 volumes, a
tiny Experiment config, and experiment trackers kept off the network."""

from __future__ import annotations

import copy
import ipaddress
import socket

import numpy as np
import pytest

#: a 2-fold experiment of a tiny 3D UNet on 4 phantoms of 16^3, 2 epochs (seconds per fold)
TINY_EXPERIMENT = {
    "name": "tiny",
    "model": {
        "name": "unet",
        "args": {"spatial_dims": 3, "in_channels": 1, "num_classes": 3, "features": [4, 8]},
    },
    "data": {
        "phantom": {"num_cases": 4, "shape": [16, 16, 16], "num_classes": 3, "seed": 1},
        "transforms": "mirror",
    },
    "training": {"epochs": 2, "batch_size": 2, "lr": 0.01},
    "experiment": {"folds": 2, "seed": 0},
    # the fold figures without test-time mirroring equal the trainer's own validation Dice
    "prediction": {"mirror": False},
}


@pytest.fixture(scope="session")
def tiny_config():
    """``make(**sections)``: a deep copy of :data:`TINY_EXPERIMENT` with each given section's keys
    updated (``make(training={"epochs": 6})``)."""

    def make(**sections):
        out = copy.deepcopy(TINY_EXPERIMENT)
        for section, values in sections.items():
            if isinstance(values, dict):
                out.setdefault(section, {}).update(values)
            else:
                out[section] = values
        return out

    return make


def threshold_cases(num_cases: int, size: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Cases ``{"data": (1, s, s, s) float32, "seg": (1, s, s, s) int16}`` with seg = data > 0:
    learnable voxel by voxel."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(num_cases):
        data = rng.normal(size=(1, size, size, size)).astype(np.float32)
        cases.append({"data": data, "seg": (data > 0).astype(np.int16)})
    return cases


@pytest.fixture
def threshold_loaders():
    """``(train_loader, val_loader)``: delira.data loaders of 16 / 4 threshold cases, batch 4."""
    from delira.data import DataLoader

    train = DataLoader(threshold_cases(16, seed=0), batch_size=4, shuffle=True, seed=3)
    val = DataLoader(threshold_cases(4, seed=1), batch_size=4)
    return train, val


@pytest.fixture
def make_cases():
    """The :func:`threshold_cases` factory."""
    return threshold_cases


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread per framework: the machine's cores are shared and the models are tiny."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def offline_tracking(monkeypatch, tmp_path):
    """No logger may reach the network: W&B offline with every folder under tmp_path, mlflow's
    default store under tmp_path, no telemetry; a connect() to anything but this machine fails
    the test."""
    home = tmp_path / "wandb-home"
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DIR": str(home),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_ERROR_REPORTING": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'default-mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }.items():
        monkeypatch.setenv(key, value)
    home.mkdir()
    attempts = []
    connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            if not local:
                attempts.append(address)
                raise ConnectionRefusedError(f"test: no network ({address})")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    yield
    assert not attempts, f"a logger tried the network: {attempts}"
