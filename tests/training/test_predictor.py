"""Predictor: sliding windows, padding and cropping, gaussian weighting and mirroring."""

from __future__ import annotations

import numpy as np
import pytest

from delira.training.predictor import gaussian_importance_map, window_starts


def test_window_starts_cover_the_axis():
    assert window_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert window_starts(11, 4, 0.5) == [0, 2, 4, 6, 7]  # the last window flush with the end
    assert window_starts(3, 4, 0.5) == [0]
    assert window_starts(8, 4, 0.0) == [0, 4]


def test_gaussian_map_is_centred():
    g = gaussian_importance_map((5, 7))
    assert g.shape == (5, 7) and g.max() == pytest.approx(1.0)
    assert np.unravel_index(g.argmax(), g.shape) == (2, 3)
    # hand-computed: sigma = 7 / 8 along axis 1, one voxel off the centre
    assert g[2, 4] == pytest.approx(np.exp(-0.5 * (1 / (7 / 8)) ** 2), rel=1e-5)


def _constant_net(values):
    import torch

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("values", torch.tensor(values, dtype=torch.float32))

        def forward(self, x):
            shape = (x.shape[0], len(values), *x.shape[2:])
            return self.values.view(1, -1, *([1] * (x.ndim - 2))).expand(shape).clone()

    return Constant()


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(20, 17, 9), (3, 5, 6)])  # larger and smaller than the patch
def test_constant_model_reproduces_the_constant(shape):
    from delira.training import Predictor

    predictor = Predictor(
        _constant_net([1.5, -2.0]), patch_size=(8, 8, 8), overlap=0.5, mirror_axes=(0, 2), output="logits"
    )
    out = predictor.predict(np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32))
    assert out.shape == (2, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], 1.5, rtol=1e-6)
    np.testing.assert_allclose(out[1], -2.0, rtol=1e-6)
    probs = Predictor(_constant_net([1.5, -2.0]), patch_size=(8, 8, 8)).predict(
        np.zeros((1, *shape), np.float32)
    )
    np.testing.assert_allclose(probs[0], 1 / (1 + np.exp(-3.5)), rtol=1e-6)


@pytest.mark.torch
def test_identity_model_pads_and_crops_back_and_mirrors():
    """A network that returns its input: the prediction is the volume itself wherever windows
    overlap, however they are weighted, flipped or padded."""
    import torch

    from delira.training import Predictor

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x * 1.0

    volume = np.random.default_rng(1).normal(size=(2, 11, 6, 13)).astype(np.float32)
    for gaussian in (True, False):
        out = Predictor(
            Identity(),
            patch_size=(8, 8, 8),
            overlap=0.25,
            mirror_axes=(0, 1, 2),
            gaussian=gaussian,
            batch_size=3,
            output="logits",
        ).predict(volume)
        np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_mirroring_averages_the_flips():
    import torch

    from delira.training import Predictor

    class Ramp(torch.nn.Module):  # output = input + position along the last axis: not flip-invariant
        def forward(self, x):
            return x + torch.arange(x.shape[-1], dtype=x.dtype)

    volume = np.zeros((1, 4, 4, 6), np.float32)
    out = Predictor(Ramp(), mirror_axes=(2,), output="logits").predict(volume)
    ramp = np.arange(6, dtype=np.float32)
    np.testing.assert_allclose(out[0], np.broadcast_to((ramp + ramp[::-1]) / 2, (4, 4, 6)))


@pytest.mark.tf
def test_keras_constant_model():
    import keras

    from delira.training import Predictor

    class Constant(keras.Model):
        def call(self, x, training=None):
            return keras.ops.concatenate(
                [keras.ops.ones_like(x) * 2.0, keras.ops.ones_like(x) * -1.0], axis=1
            )

    out = Predictor(Constant(), patch_size=(4, 4), output="logits").predict(np.zeros((1, 10, 3), np.float32))
    assert out.shape == (2, 10, 3)
    np.testing.assert_allclose(out[0], 2.0)
    np.testing.assert_allclose(out[1], -1.0)


@pytest.mark.torch
def test_forward_runs_a_plain_batch_of_any_output_rank():
    """Predictor.forward: the network's main output on one batch as float32 numpy, in evaluation
    mode (BatchNorm running statistics, dropout off) and the mode restored."""
    import torch

    from delira.training import Predictor

    torch.manual_seed(0)
    classifier = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 3),
        torch.nn.BatchNorm3d(2),
        torch.nn.Dropout(0.5),
        torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(2, 4),
    )
    classifier.train()
    x = np.random.default_rng(2).normal(size=(3, 1, 6, 6, 6)).astype(np.float64)  # cast to float32
    out = Predictor(classifier).forward(x)
    assert out.shape == (3, 4) and out.dtype == np.float32 and classifier.training
    # reference: the same module in eval mode, computed by hand from its layers
    conv, bn, _, _, _, lin = classifier
    with torch.no_grad():
        h = conv(torch.from_numpy(x.astype(np.float32))).numpy()
        mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
        h = (h - mean[:, None, None, None]) / np.sqrt(var[:, None, None, None] + bn.eps)
        h = h * bn.weight.numpy()[:, None, None, None] + bn.bias.numpy()[:, None, None, None]
        expected = h.mean(axis=(2, 3, 4)) @ lin.weight.numpy().T + lin.bias.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)

    class Deep(torch.nn.Module):  # deep supervision: main_output picks the full-resolution output
        def forward(self, x):
            return [x * 2.0, x[:, :, ::2]]

        def main_output(self, predictions):
            return predictions[0]

    volume = np.ones((1, 1, 4, 4), np.float32)
    np.testing.assert_array_equal(Predictor(Deep()).forward(volume), 2 * volume)
