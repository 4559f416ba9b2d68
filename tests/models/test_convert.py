"""The PyTorch and the Keras implementation of every model are the same network: equal parameter
counts, and after copying weights either way, equal outputs (eval mode) within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.torch, pytest.mark.tf]

TOLERANCE = 1e-4


def randomize(torch_model, seed):
    """Give every weight and batch-norm statistic a random value of a sensible scale, so that a
    copy that misses or mislays anything shows in the outputs (the DCGAN init, N(0, 0.02), is too
    small for that)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=gen) * (high - low) + low)

    with torch.no_grad():
        for module in torch_model.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.dim() > 1:
                    transposed = isinstance(module, torch.nn.modules.conv._ConvTransposeNd)
                    fan_in = p.numel() // (p.shape[1] if transposed else p.shape[0])
                    bound = (3.0 / fan_in) ** 0.5
                    uniform(p, -bound, bound)
                elif name == "weight":
                    uniform(p, 0.5, 1.5)
                else:
                    uniform(p, -0.3, 0.3)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                uniform(module.running_mean, -0.3, 0.3)
                uniform(module.running_var, 0.5, 2.0)
    return torch_model


def build_pair(case, spatial_dims, torch_fw, tf_fw, seed=0):
    torch_fw.seed(seed)
    tf_fw.seed(seed)
    kwargs = dict(case["kwargs"], spatial_dims=spatial_dims)
    return torch_fw.build(case["name"], **kwargs), tf_fw.build(case["name"], **kwargs)


def submodels(case, torch_model, keras_model):
    """(label, torch part, keras part) for each network to compare: both halves of a DCGAN."""
    if case["name"] == "dcgan":
        return [
            ("generator", torch_model.generator, keras_model.generator),
            ("discriminator", torch_model.discriminator, keras_model.discriminator),
        ]
    return [(case["name"], torch_model, keras_model)]


def inputs_for(label, case, spatial_dims, make_input):
    if label == "discriminator":
        kw = case["kwargs"]
        disc_case = {
            "name": "dcgan_discriminator",
            "kwargs": {"in_channels": kw["channels"], "image_size": kw["image_size"]},
        }
        return make_input(disc_case, spatial_dims, seed=5)
    return make_input(case, spatial_dims, seed=5)


def assert_close(a, b, what):
    a_list = a if isinstance(a, list) else [a]
    b_list = b if isinstance(b, list) else [b]
    assert len(a_list) == len(b_list)
    for x, y in zip(a_list, b_list):
        assert x.shape == y.shape, what
        assert np.abs(x).max() > 1e-2, f"{what}: outputs too small to compare ({np.abs(x).max()})"
        err = float(np.max(np.abs(x - y)))
        assert err <= TOLERANCE, f"{what}: max |torch - keras| = {err:.2e} > {TOLERANCE}"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_parameter_counts_are_equal(case, spatial_dims, torch_fw, tf_fw):
    torch_model, keras_model = build_pair(case, spatial_dims, torch_fw, tf_fw)
    assert torch_fw.num_parameters(torch_model) == tf_fw.num_parameters(keras_model)
    assert (
        torch_model.num_parameters() == keras_model.num_parameters() == torch_fw.num_parameters(torch_model)
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_torch_to_keras_gives_equal_outputs(case, spatial_dims, torch_fw, tf_fw, make_input):
    from delira.models.convert import torch_to_keras

    torch_model, keras_model = build_pair(case, spatial_dims, torch_fw, tf_fw)
    randomize(torch_model, seed=1)
    assert torch_to_keras(torch_model, keras_model) is keras_model
    for label, t_part, k_part in submodels(case, torch_model, keras_model):
        x = inputs_for(label, case, spatial_dims, make_input)
        assert_close(torch_fw.forward(t_part, x), tf_fw.forward(k_part, x), f"{label} torch_to_keras")


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_keras_to_torch_gives_equal_outputs(case, spatial_dims, torch_fw, tf_fw, make_input):
    from delira.models.convert import keras_to_torch, torch_to_keras

    source, keras_model = build_pair(case, spatial_dims, torch_fw, tf_fw)
    torch_to_keras(randomize(source, seed=2), keras_model)  # random weights on the Keras side
    torch_model, _ = build_pair(case, spatial_dims, torch_fw, tf_fw, seed=9)  # a fresh target
    for label, t_part, k_part in submodels(case, torch_model, keras_model):
        x = inputs_for(label, case, spatial_dims, make_input)
        before = torch_fw.forward(t_part, x)
        after_keras = tf_fw.forward(k_part, x)
        assert not np.allclose(
            before[0] if isinstance(before, list) else before,
            after_keras[0] if isinstance(after_keras, list) else after_keras,
            atol=TOLERANCE,
        )
    assert keras_to_torch(keras_model, torch_model) is torch_model
    for label, t_part, k_part in submodels(case, torch_model, keras_model):
        x = inputs_for(label, case, spatial_dims, make_input)
        assert_close(torch_fw.forward(t_part, x), tf_fw.forward(k_part, x), f"{label} keras_to_torch")


@pytest.mark.parametrize("case_name", ["resnet18", "unet_batch_residual_interpolate_ds"])
def test_training_mode_outputs_agree_too(case_name, cases, torch_fw, tf_fw, make_input):
    """With batch statistics instead of running ones, both normalise alike (biased variance)."""
    from delira.models.convert import torch_to_keras

    case = cases[case_name]
    torch_model, keras_model = build_pair(case, 2, torch_fw, tf_fw)
    torch_to_keras(randomize(torch_model, seed=3), keras_model)
    x = make_input(case, 2, n=3, seed=6)
    assert_close(
        torch_fw.forward(torch_model, x, training=True),
        tf_fw.forward(keras_model, x, training=True),
        f"{case_name} training mode",
    )


def test_weight_pairs_cover_every_layer_kind(cases, torch_fw, tf_fw):
    from delira.models.convert import weight_pairs

    torch_model, keras_model = build_pair(cases["unet"], 2, torch_fw, tf_fw)
    pairs = {
        path: (kind, tuple(t.shape), tuple(v.shape))
        for path, kind, t, v in weight_pairs(torch_model, keras_model)
    }
    assert pairs["encoder.0.conv1.weight"] == ("conv", (4, 2, 3, 3), (3, 3, 2, 4))
    # decoder stages run deepest first: up.0 maps 16 -> 8 channels, up.1 8 -> 4
    assert pairs["up.0.conv.weight"] == ("conv_transpose", (16, 8, 2, 2), (2, 2, 8, 16))
    assert pairs["up.1.conv.weight"] == ("conv_transpose", (8, 4, 2, 2), (2, 2, 4, 8))
    assert pairs["encoder.0.norm1.weight"] == ("instance_norm", (4,), (4,))
    assert pairs["head.bias"] == ("conv", (3,), (3,))
    resnet_t, resnet_k = build_pair(cases["resnet18"], 2, torch_fw, tf_fw)
    pairs = {
        path: (kind, tuple(t.shape), tuple(v.shape)) for path, kind, t, v in weight_pairs(resnet_t, resnet_k)
    }
    assert pairs["fc.weight"] == ("linear", (3, 32), (32, 3))
    assert pairs["layer2.0.shortcut.norm.running_var"] == ("batch_norm", (8,), (8,))


def test_differently_built_models_are_refused(torch_fw, tf_fw):
    from delira.models.convert import keras_to_torch, torch_to_keras

    t = torch_fw.build("unet", base_features=2, num_stages=3)
    k = tf_fw.build("unet", base_features=2, num_stages=2)
    with pytest.raises(ValueError, match=r"built differently.*build both with the same arguments"):
        torch_to_keras(t, k)
    with pytest.raises(ValueError, match="built differently"):
        keras_to_torch(tf_fw.build("resnet18", width=2), t)


def test_structure_mismatches_name_the_layer(torch_fw, tf_fw):
    import keras
    import torch

    from delira.models.convert import torch_to_keras
    from delira.models.tf.layers import Conv

    class KerasNet(keras.Model):
        def __init__(self, out_channels, extra=False):
            super().__init__()
            self.conv = Conv(2, 2, out_channels, 3)
            if extra:
                self.other = Conv(2, 2, 2, 1)

    torch_net = torch.nn.Module()
    torch_net.conv = torch.nn.Conv2d(2, 3, 3)
    with pytest.raises(
        ValueError,
        match=r"conv.weight: PyTorch shape \(3, 2, 3, 3\) needs Keras shape \(3, 3, 2, 3\).*\(3, 3, 2, 4\)",
    ):
        torch_to_keras(torch_net, KerasNet(4))
    with pytest.raises(ValueError, match=r"weights without a twin: PyTorch \[\], Keras \[.*kernel"):
        torch_to_keras(torch_net, KerasNet(3, extra=True))
    torch_net.head = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="has no layer at 'head'"):
        torch_to_keras(torch_net, KerasNet(3))
    converted = KerasNet(3)
    del torch_net.head
    torch_to_keras(torch_net, converted)
    np.testing.assert_array_equal(
        np.asarray(converted.conv.kernel), torch_net.conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
