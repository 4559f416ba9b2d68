"""Per-stage, per-axis UNet topology (``strides``, ``kernel_sizes``): config resolution and errors,
per-axis input sizes, output shapes and torch <-> Keras parity on anisotropic networks, the
default network unchanged, and the analytic memory count against a real forward pass."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from delira.models import (
    UNetConfig,
    check_input_size,
    estimate_unet_memory_bytes,
    input_size_rule,
    unet_activation_breakdown,
    unet_activation_elements,
    unet_parameter_count,
)
from tests.models.test_convert import assert_close, randomize

ANISO_3D = ((1, 1, 1), (2, 2, 1), (2, 2, 2))  # the last axis is coarse: pooled only once


def UNetTorch(**kwargs):
    """``delira.models.torch.UNet(**kwargs)`` (imports torch only when a torch test runs)."""
    from delira.models.torch import UNet

    return UNet(**kwargs)


# ---------------------------------------------------------------- config resolution and errors


def test_defaults_resolve_to_stride_two_and_kernel_three():
    cfg = UNetConfig(spatial_dims=3, num_stages=3)
    assert cfg.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2))
    assert cfg.kernel_sizes == ((3, 3, 3),) * 3
    assert cfg.cumulative_strides == ((1, 1, 1), (2, 2, 2), (4, 4, 4))
    # the same network described explicitly has the same config
    explicit = UNetConfig(
        spatial_dims=3, num_stages=3, strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)), kernel_sizes=(3, 3, 3)
    )
    assert explicit == cfg and explicit.as_dict() == cfg.as_dict()


def test_lists_from_yaml_and_int_broadcast_are_accepted():
    cfg = UNetConfig(
        spatial_dims=3, base_features=4, strides=[[1, 1, 1], [2, 2, 1], 2], kernel_sizes=[[3, 3, 1], 3, 3]
    )
    assert cfg.num_stages == 3  # taken from the length of strides
    assert cfg.strides == ANISO_3D
    assert cfg.kernel_sizes == ((3, 3, 1), (3, 3, 3), (3, 3, 3))
    assert cfg.cumulative_strides == ((1, 1, 1), (2, 2, 1), (4, 4, 2))
    assert cfg.size_divisors == (4, 4, 2)
    as_dict = cfg.as_dict()
    assert as_dict["strides"] == [[1, 1, 1], [2, 2, 1], [2, 2, 2]]  # plain lists, YAML-safe
    assert as_dict["kernel_sizes"] == [[3, 3, 1], [3, 3, 3], [3, 3, 3]]
    assert UNetConfig(**as_dict) == cfg
    assert UNetConfig(spatial_dims=2, strides=[1, [2, 1]], num_stages=2).strides == ((1, 1), (2, 1))
    assert UNetConfig(spatial_dims=2, strides=[1, np.int64(2)], num_stages=2).strides == ((1, 1), (2, 2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_stages": 3, "strides": [1, 2]}, "strides has 2 entries but the UNet has 3 stages"),
        ({"features": (4, 8), "kernel_sizes": [3, 3, 3]}, "kernel_sizes has 3 entries but the UNet has 2"),
        (
            {"spatial_dims": 3, "strides": [1, [2, 2], 2]},
            r"strides\[1\] has 2 entries \(2, 2\) but spatial_dims=3",
        ),
        ({"kernel_sizes": [3, [3, 3, 3]], "num_stages": 2}, r"kernel_sizes\[1\] has 3 entries"),
        (
            {"kernel_sizes": [3, 4], "num_stages": 2},
            r"kernel_sizes\[1\]=\(4, 4\) must hold odd positive ints",
        ),
        ({"kernel_sizes": [[3, 2], 3]}, r"kernel_sizes\[0\]=\(3, 2\) must hold odd"),
        ({"strides": [2, 2]}, r"strides\[0\]=\(2, 2\) must be all ones \(1, 1\)"),
        ({"strides": [1, 0]}, r"strides\[1\]=\(0, 0\) must hold positive ints"),
        ({"strides": [1, [2, 1.5]]}, r"strides\[1\] must hold ints"),
        ({"strides": [1, "22"]}, r"strides\[1\] must be an int or a list of 2 ints"),
        ({"strides": 2}, "strides must be a list with one entry per stage"),
    ],
)
def test_topology_errors_say_what_to_pass(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**kwargs)


# ---------------------------------------------------------------- per-axis input sizes


def test_input_rule_is_per_axis_product_of_strides():
    rule = input_size_rule("unet", spatial_dims=3, strides=ANISO_3D)
    assert rule.multiple == (4, 4, 2) and rule.per_axis and rule.multiples(3) == (4, 4, 2)
    assert input_size_rule("unet", num_stages=3).multiples(2) == (4, 4)
    assert rule.describe() == "multiples of (4, 4, 2) per spatial axis"
    # brute force: a size is valid on an axis when the product of the strides along it divides it
    for axis, divisor in enumerate((4, 4, 2)):
        assert rule.sizes(20, axis=axis) == [n for n in range(1, 21) if n % divisor == 0]
    assert rule.sizes(20) == [4, 8, 12, 16, 20]  # valid on every axis
    assert rule.nearest_shape((15, 17, 5)) == (16, 20, 6)
    assert rule.nearest_shape((15, 17, 5), round_up=False) == (12, 16, 4)
    check_input_size("unet", (16, 16, 4), spatial_dims=3, strides=ANISO_3D)  # no error
    # isotropic strides keep the old, single-int rule and messages
    assert input_size_rule("unet", spatial_dims=3, num_stages=4).multiple == 8
    assert input_size_rule("unet", spatial_dims=2, strides=[1, 2, [2, 2]]).describe() == "multiples of 4"


def test_per_axis_error_names_axis_multiple_and_nearest_sizes():
    with pytest.raises(ValueError) as info:
        check_input_size("unet", (16, 16, 5), spatial_dims=3, strides=ANISO_3D)
    message = str(info.value)
    assert "UNet with 3 stages needs spatial sizes divisible by (4, 4, 2)" in message
    assert "got 5 on axis 4, which needs a multiple of 2" in message
    assert "nearest valid sizes on that axis are 4 and 6" in message
    assert "stride 1" in message  # how to fix it
    with pytest.raises(ValueError, match=r"got 6 on axis 2, which needs a multiple of 4.*are 4 and 8"):
        check_input_size("unet", (6, 16, 4), spatial_dims=3, strides=ANISO_3D)
    with pytest.raises(ValueError, match="input rule for 3 spatial axes"):
        check_input_size("unet", (16, 16), spatial_dims=3, strides=ANISO_3D)


def test_per_axis_rule_with_minimums_against_brute_force():
    from delira.models import InputSizeRule

    rule = InputSizeRule(model="Net", multiple=(4, 2), minimum=(10, 3))
    assert rule.describe() == "multiples of (4, 2) per spatial axis, at least (10, 3)"
    for axis, (multiple, minimum) in enumerate([(4, 10), (2, 3)]):
        valid = [n for n in range(1, 60) if n % multiple == 0 and n >= minimum]
        assert rule.sizes(50, axis=axis) == [n for n in valid if n <= 50]
        for size in range(1, 40):
            below = [n for n in valid if n <= size]
            above = [n for n in valid if n >= size]
            expected = (size,) if size in valid else tuple(sorted({*below[-1:], above[0]}))
            assert rule.nearest(size, axis=axis) == expected, (axis, size)
    assert rule.is_valid(12, axis=0) and not rule.is_valid(8, axis=0) and rule.is_valid(4, axis=1)
    with pytest.raises(ValueError, match=r"got 8 on axis 2, which needs a multiple of 4 of at least 10"):
        rule.check((8, 4))
    with pytest.raises(ValueError, match="input rule is for 2 spatial axes; got spatial axis 2"):
        rule.sizes(10, axis=2)


@pytest.mark.parametrize(
    "backend", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]
)
def test_models_check_inputs_per_axis(backend):
    from delira.models import get_model

    net = get_model("unet", backend=backend, spatial_dims=3, base_features=2, strides=ANISO_3D)
    x = np.zeros((1, 1, 16, 16, 3), np.float32)
    if backend == "torch":
        import torch

        x = torch.from_numpy(x)
    expected = "got 3 on axis 4, which needs a multiple of 2 (input spatial shape (16, 16, 3))"
    with pytest.raises(ValueError, match=re.escape(expected)):
        net(x)


# ---------------------------------------------------------------- shapes in both frameworks

SHAPE_CASES = {
    # 3D, last axis coarse; input 16 x 16 x 4 -> stages (16, 16, 4), (8, 8, 4), (4, 4, 2)
    "3d_aniso": (
        {"spatial_dims": 3, "features": (4, 6, 8), "strides": ANISO_3D, "kernel_sizes": [[3, 3, 1], 3, 3]},
        (16, 16, 4),
        [(16, 16, 4), (8, 8, 4), (4, 4, 2)],
    ),
    # 2D with a stage that does not pool: (8, 4) -> (4, 4) -> (4, 4) -> (2, 2)
    "2d_unpooled_stage": (
        {
            "spatial_dims": 2,
            "features": (4, 5, 6, 7),
            "strides": [1, [2, 1], 1, 2],
            "kernel_sizes": [[3, 1], 3, 1, 3],
        },
        (8, 4),
        [(8, 4), (4, 4), (4, 4), (2, 2)],
    ),
}


@pytest.mark.parametrize("upsample", ["transpose", "interpolate"])
@pytest.mark.parametrize("name", list(SHAPE_CASES))
def test_output_shapes_with_deep_supervision(fw, name, upsample):
    kwargs, patch, stage_sizes = SHAPE_CASES[name]
    fw.seed(0)
    model = fw.build("unet", in_channels=2, num_classes=3, upsample=upsample, deep_supervision=True, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, 2, *patch)).astype(np.float32)
    out = fw.forward(model, x)
    # one output per decoder level 0 .. num_stages - 2, at that stage's size (written out by hand)
    assert [o.shape for o in out] == [(2, 3, *size) for size in stage_sizes[:-1]]
    assert all(o.dtype == "float32" for o in out)


@pytest.mark.torch
def test_torch_encoder_feature_maps_have_the_stage_sizes():
    import torch

    kwargs, patch, stage_sizes = SHAPE_CASES["3d_aniso"]
    model = UNetTorch(**kwargs)
    shapes = []
    for block in model.encoder:
        block.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        model(torch.zeros(1, 1, *patch))
    assert shapes == [(1, f, *s) for f, s in zip((4, 6, 8), stage_sizes)]
    # the convolutions of stage 0 use the (3, 3, 1) kernel with padding (1, 1, 0)
    conv = model.encoder[0].conv1
    assert conv.kernel_size == (3, 3, 1) and conv.padding == (1, 1, 0)
    assert model.up[0].conv.kernel_size == (2, 2, 2) and model.up[1].conv.stride == (2, 2, 1)


# ---------------------------------------------------------------- torch <-> Keras parity

PARITY_CASES = {
    "3d_transpose_plain_instance": (
        {"spatial_dims": 3, "features": (4, 6, 8), "strides": ANISO_3D, "kernel_sizes": [[3, 3, 1], 3, 3]},
        (16, 16, 4),
    ),
    "3d_interpolate_residual_batch": (
        {
            "spatial_dims": 3,
            "features": (4, 6, 8),
            "strides": ANISO_3D,
            "kernel_sizes": [[3, 3, 1], [3, 3, 1], 3],
            "upsample": "interpolate",
            "block": "residual",
            "norm": "batch",
        },
        (16, 16, 4),
    ),
    "2d_interpolate_unpooled_stage": (
        {**SHAPE_CASES["2d_unpooled_stage"][0], "upsample": "interpolate"},
        (8, 4),
    ),
}


@pytest.mark.torch
@pytest.mark.tf
@pytest.mark.parametrize("name", list(PARITY_CASES))
def test_torch_and_keras_agree_on_anisotropic_networks(name, torch_fw, tf_fw):
    from delira.models.convert import keras_to_torch, torch_to_keras

    kwargs, patch = PARITY_CASES[name]
    kwargs = dict(kwargs, in_channels=2, num_classes=3, deep_supervision=True)
    torch_fw.seed(0)
    tf_fw.seed(0)
    torch_model, keras_model = torch_fw.build("unet", **kwargs), tf_fw.build("unet", **kwargs)
    assert torch_fw.num_parameters(torch_model) == tf_fw.num_parameters(keras_model)
    torch_to_keras(randomize(torch_model, seed=1), keras_model)
    x = np.random.default_rng(5).standard_normal((2, 2, *patch)).astype(np.float32)
    assert_close(torch_fw.forward(torch_model, x), tf_fw.forward(keras_model, x), f"{name} torch_to_keras")
    # and back, into a freshly initialised PyTorch model
    torch_fw.seed(9)
    fresh = torch_fw.build("unet", **kwargs)
    keras_to_torch(keras_model, fresh)
    assert_close(torch_fw.forward(fresh, x), tf_fw.forward(keras_model, x), f"{name} keras_to_torch")
    if kwargs.get("norm") == "batch":  # batch statistics in training mode
        assert_close(
            torch_fw.forward(torch_model, x, training=True),
            tf_fw.forward(keras_model, x, training=True),
            f"{name} training mode",
        )


@pytest.mark.torch
@pytest.mark.tf
def test_keras_linear_upsampling_matches_torch_per_axis():
    import torch

    from delira.models.tf.layers import to_channels_first, to_channels_last, upsample_linear
    from delira.models.torch.layers import upsample_linear as torch_upsample

    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4, 3)).astype(np.float32)
    for factor in [(2, 2, 1), (1, 2, 3), 2]:
        expected = torch_upsample(torch.from_numpy(x), factor).numpy()
        got = np.asarray(to_channels_first(upsample_linear(to_channels_last(x), factor)))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_deep_supervision_losses_subsample_targets_per_axis(fw):
    kwargs, patch, stage_sizes = SHAPE_CASES["2d_unpooled_stage"]
    fw.seed(0)
    model = fw.build("unet", in_channels=1, num_classes=3, deep_supervision=True, **kwargs)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1, *patch)).astype(np.float32)
    seg = rng.integers(0, 3, (2, *patch))
    predictions = model(x if fw.name == "tf" else fw.torch.from_numpy(x))
    assert len(predictions) == 3
    losses = fw.losses("ce")
    targets = seg if fw.name == "tf" else fw.torch.from_numpy(seg)
    got = float(np.asarray(_numpy(model.compute_losses(predictions, targets, losses)["ce"])))
    # by hand: level 1 is (4, 4), so the targets are taken every 2nd voxel on the first axis only
    sub = seg[:, ::2, ::1]
    assert sub.shape[1:] == stage_sizes[1]
    fn = losses["ce"]
    if fw.name == "torch":
        t = fw.torch
        parts = [_numpy(fn(predictions[0], t.from_numpy(seg))), _numpy(fn(predictions[1], t.from_numpy(sub)))]
    else:
        parts = [_numpy(fn(seg, predictions[0])), _numpy(fn(sub, predictions[1]))]
    # nnU-Net's weights for 3 outputs: 1, 1/2 and 0 for the lowest resolution, normalised: 2/3, 1/3, 0
    assert got == pytest.approx((2 / 3) * float(parts[0]) + (1 / 3) * float(parts[1]), rel=1e-5)


def test_deep_supervision_weights_are_nnunets():
    from delira.models import deep_supervision_weights

    # nnU-Net v2 (nnUNetTrainer._build_loss): 1 / 2**k per output, the lowest resolution 0, sum 1
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(2) == [1.0, 0.0]
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    for bad in (0, 2.0, True, "3"):
        with pytest.raises(ValueError, match="count must be an int >= 1"):
            deep_supervision_weights(bad)


# ---------------------------------------------------------------- the default network is unchanged


@pytest.mark.torch
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_default_network_equals_explicit_stride_two_kernel_three(spatial_dims):
    import torch

    def build(**extra):
        torch.manual_seed(0)
        return UNetTorch(spatial_dims=spatial_dims, base_features=2, num_stages=4, **extra)

    default = build()
    explicit = build(
        strides=[[1] * spatial_dims] + [[2] * spatial_dims] * 3, kernel_sizes=[[3] * spatial_dims] * 4
    )
    assert default.config == explicit.config
    # the same weights under the same names (checkpoints load either way), same outputs
    default_state, explicit_state = default.state_dict(), explicit.state_dict()
    assert list(default_state) == list(explicit_state)
    for key, value in default_state.items():
        assert torch.equal(value, explicit_state[key]), key
    x = torch.randn(1, 1, *[16] * spatial_dims)
    with torch.no_grad():
        assert torch.equal(default(x), explicit(x))


@pytest.mark.torch
def test_default_parameter_counts_are_the_published_table():
    import torch

    # the README's table of delira-models (2D and 3D defaults), unchanged by the new arguments
    with torch.device("meta"):
        assert UNetTorch().num_parameters() == 1_926_466
        assert UNetTorch(spatial_dims=3).num_parameters() == 5_601_154
        assert UNetTorch(block="residual").num_parameters() == 2_013_922
    assert unet_parameter_count(UNetConfig()) == 1_926_466
    assert unet_parameter_count({"spatial_dims": 3}) == 5_601_154


# ---------------------------------------------------------------- memory


def _numpy(value):
    """A torch tensor (detached) or a TF tensor as numpy."""
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


def conv_params(c_in, c_out, kernel, bias):
    return c_in * c_out * math.prod(kernel) + (c_out if bias else 0)


def test_parameter_count_by_hand_for_an_anisotropic_unet():
    # features (4, 8), 1 -> 2 classes, stage 0 kernel (3, 1), stage 1 kernel (3, 3), stride (2, 1)
    cfg = UNetConfig(features=(4, 8), strides=[1, [2, 1]], kernel_sizes=[[3, 1], 3])
    enc0 = conv_params(1, 4, (3, 1), False) + conv_params(4, 4, (3, 1), False) + 2 * 2 * 4
    enc1 = conv_params(4, 8, (3, 3), False) + conv_params(8, 8, (3, 3), False) + 2 * 2 * 8
    up = conv_params(8, 4, (2, 1), True)  # transposed conv, kernel = stride = (2, 1)
    dec = conv_params(8, 4, (3, 1), False) + conv_params(4, 4, (3, 1), False) + 2 * 2 * 4
    head = conv_params(4, 2, (1, 1), True)
    assert unet_parameter_count(cfg) == enc0 + enc1 + up + dec + head == 76 + 896 + 68 + 160 + 10


MEMORY_CASES = [
    ({"spatial_dims": 2, "features": (4, 8, 16)}, (16, 16)),
    (
        {
            "spatial_dims": 2,
            "features": (4, 6, 8, 10),
            "strides": [1, [2, 1], 1, 2],
            "upsample": "interpolate",
            "deep_supervision": True,
        },
        (8, 4),
    ),
    ({"spatial_dims": 3, "features": (4, 8, 16)}, (8, 8, 8)),
    (
        {
            "spatial_dims": 3,
            "features": (4, 6, 8),
            "strides": ANISO_3D,
            "kernel_sizes": [[3, 3, 1], 3, 3],
            "block": "residual",
            "norm": "batch",
            "upsample": "interpolate",
            "deep_supervision": True,
        },
        (16, 16, 4),
    ),
    ({"spatial_dims": 3, "features": (4, 6, 8), "strides": ANISO_3D, "block": "residual"}, (8, 8, 2)),
]


@pytest.mark.torch
@pytest.mark.parametrize(("kwargs", "patch"), MEMORY_CASES)
def test_activation_count_equals_a_real_forward_pass(kwargs, patch):
    """Brute force on a PyTorch forward pass in training mode: forward hooks sum the output of every
    leaf module (conv, transposed conv, norm, max-pool: the "conv", "norm", "pool" and "logits"
    kinds); a TorchFunctionMode sums the output of every torch call made by the network's own code
    (also the functional ReLUs, interpolations, residual additions and concatenations): that is
    the whole count, exactly."""
    import torch
    from torch.overrides import TorchFunctionMode

    batch, channels = 2, 2
    model = UNetTorch(in_channels=channels, num_classes=3, **kwargs).train()
    leaf_total = [0]

    def hook(module, inputs, output):
        leaf_total[0] += output.numel()

    for module in model.modules():
        if not list(module.children()):
            module.register_forward_hook(hook)

    feature_map_rank = len(patch) + 2

    class CountOutputs(TorchFunctionMode):
        total = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == feature_map_rank:
                CountOutputs.total += out.numel()
            return out

    x = torch.randn(batch, channels, *patch)
    with CountOutputs():
        model(x)
    breakdown = unet_activation_breakdown(model.config, patch, batch_size=batch)
    assert leaf_total[0] == breakdown["conv"] + breakdown["norm"] + breakdown["pool"] + breakdown["logits"]
    assert (
        CountOutputs.total == unet_activation_elements(model.config, patch, batch) == sum(breakdown.values())
    )
    assert unet_parameter_count(model.config) == model.num_parameters()


def test_activation_count_by_hand_for_a_tiny_unet():
    # features (2, 4), 1 channel in, 3 classes, 2D 4 x 4, batch 1, plain blocks, transposed conv
    b = unet_activation_breakdown({"features": (2, 4), "num_classes": 3}, (4, 4))
    n0, n1 = 16, 4  # voxels at stage 0 and 1
    assert b["conv"] == 2 * 2 * n0 + 2 * 4 * n1 + 2 * n0 + 2 * 2 * n0  # encoder, up, decoder
    assert b["norm"] == b["activation"] == 2 * 2 * n0 + 2 * 4 * n1 + 2 * 2 * n0
    assert b["pool"] == 2 * n1 and b["concat"] == 4 * n0 and b["logits"] == 3 * n0
    assert b["interpolate"] == b["residual"] == 0


def test_memory_estimate_adds_parameter_copies_and_scales_with_batch():
    cfg = UNetConfig(spatial_dims=3, features=(4, 8, 16), strides=ANISO_3D)
    acts = unet_activation_elements(cfg, (16, 16, 4))
    assert unet_activation_elements(cfg, (16, 16, 4), batch_size=3) == 3 * acts
    params = unet_parameter_count(cfg)
    assert estimate_unet_memory_bytes(cfg, (16, 16, 4), 1) == 4 * (acts + 4 * params)
    assert estimate_unet_memory_bytes(cfg, (16, 16, 4), 2, bytes_per_element=2, parameter_copies=3) == 2 * (
        2 * acts + 3 * params
    )
    # an anisotropic patch pooled less on its coarse axis costs more than pooling it like the others
    iso = UNetConfig(spatial_dims=3, features=(4, 8, 16))
    assert unet_activation_elements(cfg, (16, 16, 4)) > unet_activation_elements(iso, (16, 16, 4))


def test_memory_errors():
    cfg = UNetConfig(spatial_dims=3, features=(4, 8, 16), strides=ANISO_3D)
    with pytest.raises(ValueError, match=r"patch_size \(16, 16, 5\) does not fit the UNet.*got 5 on axis 2"):
        unet_activation_elements(cfg, (16, 16, 5))
    with pytest.raises(ValueError, match="patch_size must be 3 positive ints"):
        unet_activation_elements(cfg, (16, 16))
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        estimate_unet_memory_bytes(cfg, (16, 16, 4), 0)
    with pytest.raises(TypeError, match="expected a UNetConfig or a dict"):
        unet_parameter_count("unet")
    # numpy sizes (as a planner computes them) are fine
    assert estimate_unet_memory_bytes(cfg, np.array([16, 16, 4]), np.int64(2)) == estimate_unet_memory_bytes(
        cfg, (16, 16, 4), 2
    )


def test_anisotropic_training_step_moves_every_weight(fw):
    """The framework's own step (a traced ``tf.function`` in TF) on an anisotropic deep-supervised
    UNet: finite losses, full-resolution predictions, every weight updated but the head of the
    lowest-resolution output, which nnU-Net's weights give 0 (a 1x1 conv from 6 features to 3
    classes, and its bias)."""
    kwargs, patch, _ = SHAPE_CASES["3d_aniso"]
    fw.seed(0)
    model = fw.build("unet", in_channels=1, num_classes=3, deep_supervision=True, **kwargs)
    rng = np.random.default_rng(2)
    batch = {
        "data": rng.standard_normal((2, 1, *patch)).astype(np.float32),
        "seg": rng.integers(0, 3, (2, 1, *patch)).astype(np.int32),
    }
    before = fw.weights(model)
    values, predictions = fw.step(model, batch, fw.optimizers(model, 1e-2), fw.losses("ce"))
    assert np.isfinite(values["ce"]) and tuple(predictions.shape) == (2, 3, *patch)
    unchanged = [a.shape for a, b in zip(before, fw.weights(model)) if np.array_equal(a, b)]
    head = (3, 6, 1, 1, 1) if fw.name == "torch" else (1, 1, 1, 6, 3)
    assert sorted(unchanged) == sorted([head, (3,)])


def test_models_rebuild_from_their_config_with_strides(fw):
    kwargs = SHAPE_CASES["2d_unpooled_stage"][0]
    model = fw.build("unet", **kwargs)
    arguments = model.config.as_dict()
    assert arguments["strides"] == [[1, 1], [2, 1], [1, 1], [2, 2]]
    if fw.name == "tf":
        assert model.get_config() == arguments
        rebuilt = type(model).from_config(model.get_config())
    else:
        rebuilt = type(model)(**arguments)
    assert rebuilt.config == model.config
    assert fw.num_parameters(rebuilt) == fw.num_parameters(model) == unet_parameter_count(model.config)
