"""Constructor arguments: validated before any framework is touched, with errors that say how to fix them."""

from __future__ import annotations

import pytest

from delira.models import (
    DCGANConfig,
    DCGANGeneratorConfig,
    ResNetConfig,
    UNetConfig,
    available_models,
    get_model,
)


def test_available_models():
    assert available_models() == [
        "dcgan",
        "dcgan_discriminator",
        "dcgan_generator",
        "resnet",
        "resnet18",
        "resnet34",
        "resnet50",
        "unet",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 20}, "depth must be 18, 34 or 50; got 20"),
        ({"spatial_dims": 1}, "spatial_dims must be 2"),
        ({"in_channels": 0}, "in_channels must be a positive int; got 0"),
        ({"width": 2.5}, "width must be a positive int"),
    ],
)
def test_resnet_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetConfig(**kwargs)


def test_resnet_config_derived_values():
    assert ResNetConfig(depth=34).blocks_per_stage == (3, 4, 6, 3)
    cfg = ResNetConfig(depth=50, width=8)
    assert cfg.bottleneck and cfg.expansion == 4
    assert cfg.stage_widths == (8, 16, 32, 64) and cfg.out_features == 256


def test_unet_features_resolution():
    assert UNetConfig().stage_features == (32, 64, 128, 256)
    assert UNetConfig(base_features=8, num_stages=3).stage_features == (8, 16, 32)
    assert UNetConfig(features=[5, 7]).stage_features == (5, 7)
    assert UNetConfig(features=(4, 8), num_stages=2, base_features=4).depth == 2
    # the same network, described two ways
    assert UNetConfig(base_features=4, num_stages=3).as_dict() == UNetConfig(features=(4, 8, 16)).as_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": (4, 8), "num_stages": 3}, "num_stages=3 but features has 2 entries"),
        ({"features": (4, 8), "base_features": 8}, "base_features=8 contradicts features"),
        ({"num_stages": 1}, "at least 2 stages"),
        ({"features": (4, 8), "deep_supervision": True}, "deep_supervision needs at least 3 stages"),
        ({"norm": "group"}, "norm must be 'instance' or 'batch'; got 'group'"),
        ({"block": "dense"}, "block must be 'plain' or 'residual'"),
        ({"upsample": "nearest"}, "upsample must be 'transpose' or 'interpolate'"),
        ({"features": (4, 0)}, "every entry of features must be a positive int"),
    ],
)
def test_unet_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**kwargs)


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (
            UNetConfig,
            {"features": 5},
            r"UNet: features must be a list of positive ints.*got 5; for one int use",
        ),
        (UNetConfig, {"spatial_dims": 2.0}, r"UNet: spatial_dims must be 2 .* or 3 .*got 2\.0"),
        (ResNetConfig, {"depth": 18.0}, r"ResNet: depth must be 18, 34 or 50; got 18\.0"),
        (
            UNetConfig,
            {"features": (2, 4, 8), "deep_supervision": "no"},
            "UNet: deep_supervision must be True or False; got 'no'",
        ),
        (DCGANConfig, {"channels": 0}, "DCGAN: channels must be a positive int; got 0"),
        (DCGANConfig, {"generator_features": 0}, "DCGAN: generator_features must be a positive int"),
        (DCGANConfig, {"discriminator_features": 2.5}, "DCGAN: discriminator_features must be a positive"),
        (DCGANConfig, {"image_size": 30}, r"DCGAN: image_size must be 4 \* 2\*\*k"),
    ],
)
def test_wrong_types_and_values_name_the_argument_given(config, kwargs, message):
    # each error names the argument as the caller spelled it, not a field of a sub-network or a
    # TypeError from deep inside
    with pytest.raises(ValueError, match=message):
        config(**kwargs)


def test_models_reject_a_single_int_for_features(fw):
    with pytest.raises(ValueError, match="features must be a list of positive ints"):
        fw.build("unet", features=8)
    with pytest.raises(ValueError, match="features must be a list of positive ints"):
        get_model("unet", backend=fw.name, features=8)


@pytest.mark.parametrize("size", [4, 12, 48, 100])
def test_dcgan_image_size_must_be_four_times_a_power_of_two(size):
    with pytest.raises(ValueError, match=r"image_size must be 4 \* 2\*\*k.*nearest valid sizes are"):
        DCGANGeneratorConfig(image_size=size)


def test_dcgan_config_derived_values():
    assert DCGANGeneratorConfig(image_size=64, base_features=64).hidden_features == (512, 256, 128, 64)
    cfg = DCGANConfig(image_size=32, channels=3, generator_features=8, discriminator_features=4)
    assert cfg.generator.out_channels == 3 and cfg.generator.hidden_features == (32, 16, 8)
    assert cfg.discriminator.hidden_features == (4, 8, 16)


def test_get_model_errors_before_importing_a_framework():
    with pytest.raises(ValueError, match=r"unknown model 'unet3d'.*did you mean 'unet'"):
        get_model("unet3d")
    with pytest.raises(ValueError, match="backend must be 'torch' or 'tf'; got 'jax'"):
        get_model("unet", backend="jax")
    with pytest.raises(ValueError, match="model 'resnet18' has depth=18; got depth=34"):
        get_model("resnet18", depth=34)
    with pytest.raises(TypeError, match="takes depth, spatial_dims, in_channels, num_classes, width"):
        get_model("resnet", widht=3)
    with pytest.raises(ValueError, match="num_stages=1"):
        get_model("unet", backend="tf", num_stages=1)


def test_config_property_of_models_equals_the_config(fw):
    model = fw.build("unet", base_features=2, num_stages=2)
    assert model.config == UNetConfig(base_features=2, num_stages=2)
    assert model.config.as_dict()["features"] == [2, 4]


def test_unet_config_with_no_features():
    with pytest.raises(ValueError, match="at least 2 stages"):
        UNetConfig(features=(), base_features=4)


def test_models_rebuild_from_their_config(fw, case):
    model = fw.build(case["name"], spatial_dims=2, **case["kwargs"])
    arguments = model.config.as_dict()
    if fw.name == "tf":
        assert model.get_config() == arguments
        rebuilt = type(model).from_config(model.get_config())
    else:
        rebuilt = type(model)(**arguments)
    assert rebuilt.config == model.config
    assert fw.num_parameters(rebuilt) == fw.num_parameters(model)
