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


def _small_dcgan():
    import torch

    from delira.models.torch import DCGAN

    torch.manual_seed(0)
    return DCGAN(
        spatial_dims=2,
        latent_dim=8,
        channels=1,
        image_size=16,
        generator_features=8,
        discriminator_features=8,
    )


@pytest.mark.parametrize("schedule", ["step", "callable"])
def test_every_optimizer_of_a_gan_follows_the_schedule(tmp_path, schedule):
    """The learning rate schedule (named, or a torch scheduler per optimizer) reaches the generator's
    and the discriminator's optimizer alike: after each epoch both carry lr * gamma ** (epoch // 1)."""
    import torch

    from delira.training import PyTorchNetworkTrainer

    lr, gamma = 1e-3, 0.5
    scheduler = (
        "step"
        if schedule == "step"
        else (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=gamma))
    )
    seen = []

    from delira.training import Callback

    class Record(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            seen.append({k: o.param_groups[0]["lr"] for k, o in trainer.optimizers.items()})

    trainer = PyTorchNetworkTrainer(
        _small_dcgan(),
        losses={"adversarial": torch.nn.BCEWithLogitsLoss()},
        lr=lr,
        scheduler=scheduler,
        scheduler_kwargs={"step_size": 1, "gamma": gamma} if schedule == "step" else None,
        callbacks=[Record()],
        save_dir=tmp_path,
        verbose=False,
    )
    data = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    trainer.fit([{"data": data}], epochs=3)
    assert len(seen) == 3
    for lrs in seen:  # generator and discriminator always agree
        assert lrs["generator"] == pytest.approx(lrs["discriminator"]), lrs
    final = {k: o.param_groups[0]["lr"] for k, o in trainer.optimizers.items()}
    assert final["generator"] == pytest.approx(final["discriminator"])
    assert final["discriminator"] < lr  # the schedule reached the discriminator, too
    trainer.set_lr(0.25)
    assert all(g["lr"] == 0.25 for o in trainer.optimizers.values() for g in o.param_groups)
