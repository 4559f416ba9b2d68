"""A network with its own alternating step (DCGAN) trains with one optimizer per parameter group."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch


def test_dcgan_trains_generator_and_discriminator_with_their_own_optimizers(tmp_path):
    import torch

    from delira.models.torch import DCGAN
    from delira.training import PyTorchNetworkTrainer

    torch.manual_seed(0)
    net = DCGAN(
        spatial_dims=2,
        latent_dim=8,
        channels=1,
        image_size=16,
        generator_features=8,
        discriminator_features=8,
    )
    g_before = [p.detach().clone() for p in net.generator.parameters()]
    d_before = [p.detach().clone() for p in net.discriminator.parameters()]
    trainer = PyTorchNetworkTrainer(
        net, losses={"adversarial": torch.nn.BCEWithLogitsLoss()}, lr=1e-3, save_dir=tmp_path, verbose=False
    )
    data = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    history = trainer.fit([{"data": data[:4]}, {"data": data[4:]}], epochs=2)
    assert set(trainer.optimizers) == {"generator", "discriminator"}
    g_ids = {id(p) for p in net.generator.parameters()}
    assert {id(p) for group in trainer.optimizers["generator"].param_groups for p in group["params"]} == g_ids
    assert len(history) == 2 and np.isfinite(history[-1]["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(g_before, net.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, net.discriminator.parameters()))
    # both optimizers are in the checkpoint, so a resumed GAN continues exactly
    from safetensors import safe_open

    with safe_open(str(tmp_path / "checkpoints" / "last.safetensors"), "np") as f:
        keys = list(f.keys())
    assert any("optimizer_generator" in k for k in keys) and any("optimizer_discriminator" in k for k in keys)
