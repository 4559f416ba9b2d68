"""Every model, in both frameworks, overfits a tiny fixed batch through its ``training_step``:
the loss falls by at least 90% within a bounded number of Adam steps."""

from __future__ import annotations

import numpy as np
import pytest

MAX_STEPS = 100


def _blocky(values, factor):
    """Repeat each spatial element of ``(N, C, *S)`` ``factor`` times along every spatial axis."""
    for axis in range(2, values.ndim):
        values = np.repeat(values, factor, axis=axis)
    return values


def _batch(name, kwargs, spatial_dims, rng):
    if name.startswith("resnet"):
        size = {2: 32, 3: 16}[spatial_dims]
        data = rng.standard_normal((2, kwargs["in_channels"], *[size] * spatial_dims)).astype(np.float32)
        return {"data": data, "label": np.array([0, 2], dtype=np.int64)}, "ce"
    if name == "unet":
        size = {2: 32, 3: 16}[spatial_dims]
        # blocky label maps (4-voxel blocks of classes 0-2); each class has its own intensity in
        # channel 0 or 1, plus noise
        seg = _blocky(rng.integers(0, 3, size=(2, 1, *[size // 4] * spatial_dims)), 4)
        data = np.concatenate([seg == 1, seg == 2], axis=1).astype(np.float32)
        data += 0.3 * rng.standard_normal(data.shape).astype(np.float32)
        return {"data": data, "seg": seg.astype(np.int64)}, "ce"
    if name == "dcgan_generator":
        size = kwargs["image_size"]
        latent = rng.standard_normal((2, kwargs["latent_dim"])).astype(np.float32)
        # blocky targets in [-0.8, 0.8]: 4-voxel blocks of one value
        images = _blocky(
            rng.uniform(-0.8, 0.8, size=(2, kwargs["out_channels"], *[size // 4] * spatial_dims)), 4
        )
        return {"latent": latent, "data": images.astype(np.float32)}, "mse"
    if name == "dcgan_discriminator":
        size = kwargs["image_size"]
        data = rng.standard_normal((4, kwargs["in_channels"], *[size] * spatial_dims)).astype(np.float32)
        return {"data": data, "label": np.array([1, 0, 1, 0], dtype=np.int64)}, "bce"
    raise AssertionError(name)


# model -> (Adam learning rate, spatial dims to check, changed arguments, TF eager). TensorFlow runs
# the deep ResNets eagerly: tracing them into a tf.function costs more than the few steps they take
# here (``test_training_step.py`` checks that traced and eager steps agree).
OVERFIT = {
    "resnet18": (3e-2, (2, 3), {}, True),
    "resnet34": (3e-2, (2,), {}, True),
    "resnet50": (3e-2, (2,), {}, True),
    "unet": (1e-2, (2, 3), {}, False),
    "unet_batch_residual_interpolate_ds": (1e-2, (2,), {}, False),
    "dcgan_generator": (1e-2, (2, 3), {"base_features": 8}, False),
    "dcgan_discriminator": (1e-3, (2,), {}, False),
}


def _params():
    for case, (lr, dims, changes, eager) in OVERFIT.items():
        for d in dims:
            yield pytest.param(case, lr, d, changes, eager, id=f"{case}-{d}d")


@pytest.mark.parametrize(("case_name", "lr", "spatial_dims", "changes", "eager"), list(_params()))
def test_tiny_batch_overfits(fw, cases, case_name, lr, spatial_dims, changes, eager):
    case = cases[case_name]
    kwargs = {**case["kwargs"], **changes}
    fw.seed(3)
    model = fw.build(case["name"], spatial_dims=spatial_dims, **kwargs)
    batch, loss_kind = _batch(case["name"], kwargs, spatial_dims, np.random.default_rng(3))
    optimizers = fw.optimizers(model, lr)
    losses = fw.losses(loss_kind)
    history = []
    for _ in range(MAX_STEPS):
        values, _ = fw.step(model, batch, optimizers, losses, eager=eager)
        history.append(values[loss_kind])
        if history[-1] <= 0.1 * history[0]:
            break
    assert history[-1] <= 0.1 * history[0], (
        f"loss fell from {history[0]:.4f} to {history[-1]:.4f} (min {min(history):.4f}) in {len(history)} steps"
    )
