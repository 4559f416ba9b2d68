"""The framework-free layer plans both backends build from, against hand-computed cases; the shared
constructors (one signature for PyTorch and Keras, the config's fields and defaults)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from delira.models._plans import (
    ConvSpec,
    PoolSpec,
    ResNetBlockPlan,
    UNetBlockPlan,
    UNetUpPlan,
    changes_size,
    dcgan_discriminator_plan,
    dcgan_generator_plan,
    dcgan_plan,
    per_axis,
    resnet_plan,
    same_padding,
    unet_plan,
)
from delira.models.configs import (
    DCGANConfig,
    DCGANDiscriminatorConfig,
    DCGANGeneratorConfig,
    ResNetConfig,
    UNetConfig,
)

# ------------------------------------------------------------------------------- small helpers


def test_sizes_padding_and_size_changes():
    assert per_axis(3, 2) == (3, 3) and per_axis([3, 1, 5], 3) == (3, 1, 5)
    with pytest.raises(ValueError, match=r"got 2 sizes \(3, 3\) for 3 spatial axes"):
        per_axis((3, 3), 3)
    assert same_padding(3) == 1 and same_padding(5) == 2 and same_padding((3, 3, 1)) == (1, 1, 0)
    assert changes_size(2) and not changes_size(1)
    assert changes_size((2, 2, 1)) and not changes_size((1, 1, 1))


def test_conv_spec_arguments_and_parameter_count():
    spec = ConvSpec(3, 8, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0), bias=False)
    assert spec.arguments() == {
        "in_channels": 3,
        "out_channels": 8,
        "kernel_size": (3, 3, 1),
        "stride": (2, 2, 1),
        "padding": (1, 1, 0),
        "bias": False,
    }
    assert spec.parameters(3) == 3 * 8 * 9  # 3x3x1 kernel, no bias
    assert ConvSpec(4, 2, 1).parameters(2) == 4 * 2 + 2  # 1x1 conv with bias
    assert ConvSpec(2, 5, 3).parameters(3) == 2 * 5 * 27 + 5
    assert PoolSpec(3, 2, 1).arguments() == {"kernel_size": 3, "stride": 2, "padding": 1}


# ------------------------------------------------------------------------------------- ResNet


def test_resnet_block_plans():
    basic = ResNetBlockPlan(in_channels=4, width=4, stride=1, bottleneck=False)
    assert basic.out_channels == 4 and not basic.projects
    assert basic.convs == (
        ConvSpec(4, 4, 3, stride=1, padding=1, bias=False),
        ConvSpec(4, 4, 3, stride=1, padding=1, bias=False),
    )
    assert ResNetBlockPlan(4, 8, 2, False).projects  # stride and channels change
    assert ResNetBlockPlan(8, 8, 2, False).projects  # the stride alone
    bottleneck = ResNetBlockPlan(in_channels=16, width=8, stride=2, bottleneck=True)
    assert bottleneck.out_channels == 32 and bottleneck.projects
    assert bottleneck.convs == (
        ConvSpec(16, 8, 1, bias=False),
        ConvSpec(8, 8, 3, stride=2, padding=1, bias=False),
        ConvSpec(8, 32, 1, bias=False),
    )
    assert not ResNetBlockPlan(32, 8, 1, True).projects  # 32 in, 4 * 8 out, stride 1


def test_resnet18_plan_by_hand():
    plan = resnet_plan(ResNetConfig(depth=18, in_channels=2, num_classes=3, width=4))
    assert plan.stem == ConvSpec(2, 4, 7, stride=2, padding=3, bias=False)
    assert plan.pool == PoolSpec(3, stride=2, padding=1)
    assert [len(stage) for stage in plan.stages] == [2, 2, 2, 2]
    # (in_channels, width, stride, projects) of every block, stage by stage
    assert [[(b.in_channels, b.width, b.stride, b.projects) for b in stage] for stage in plan.stages] == [
        [(4, 4, 1, False), (4, 4, 1, False)],
        [(4, 8, 2, True), (8, 8, 1, False)],
        [(8, 16, 2, True), (16, 16, 1, False)],
        [(16, 32, 2, True), (32, 32, 1, False)],
    ]
    assert (plan.in_features, plan.num_classes) == (32, 3)


def test_resnet50_plan_by_hand():
    plan = resnet_plan(ResNetConfig(depth=50, width=2))
    assert [len(stage) for stage in plan.stages] == [3, 4, 6, 3]
    first = plan.stages[0][0]
    # the first bottleneck widens 2 -> 8 channels at stride 1: a projection all the same
    assert (first.in_channels, first.out_channels, first.stride, first.projects) == (2, 8, 1, True)
    assert [b.in_channels for b in plan.stages[1]] == [8, 16, 16, 16]
    assert [b.stride for b in plan.stages[3]] == [2, 1, 1]
    assert plan.in_features == 4 * 16


def resnet_parameters(config):
    """Trainable parameters counted from the plan: convs, two per batch norm, the linear layer."""
    plan = resnet_plan(config)
    total = plan.stem.parameters(2) + 2 * plan.stem.out_channels
    for stage in plan.stages:
        for block in stage:
            total += sum(c.parameters(2) + 2 * c.out_channels for c in block.convs)
            if block.projects:
                total += block.in_channels * block.out_channels + 2 * block.out_channels
    return total + plan.in_features * plan.num_classes + plan.num_classes


@pytest.mark.parametrize(("depth", "published"), [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_resnet_plans_have_the_published_imagenet_counts(depth, published):
    # torchvision's ImageNet ResNets: 3 input channels, 1000 classes, width 64
    assert resnet_parameters(ResNetConfig(depth=depth, in_channels=3, num_classes=1000)) == published


# --------------------------------------------------------------------------------------- UNet


def test_unet_block_and_up_plans():
    block = UNetBlockPlan(8, 4, (3, 3, 1))
    assert block.convs == (
        ConvSpec(8, 4, (3, 3, 1), padding=(1, 1, 0), bias=False),
        ConvSpec(4, 4, (3, 3, 1), padding=(1, 1, 0), bias=False),
    )
    assert block.projects and not UNetBlockPlan(4, 4).projects
    up = UNetUpPlan(16, 8, (2, 2, 1), "transpose")
    assert up.conv == ConvSpec(16, 8, (2, 2, 1), stride=(2, 2, 1)) and not up.interpolates
    assert UNetUpPlan(16, 8, 2, "interpolate").conv == ConvSpec(16, 8, 1)
    assert UNetUpPlan(16, 8, 2, "interpolate").interpolates
    assert not UNetUpPlan(16, 8, (1, 1), "interpolate").interpolates  # nothing to upsample


def test_unet_plan_by_hand():
    config = UNetConfig(
        spatial_dims=3,
        in_channels=2,
        num_classes=3,
        features=(4, 8, 16),
        strides=[1, [2, 2, 1], [1, 1, 1]],
        kernel_sizes=[[3, 3, 1], 3, 5],
        deep_supervision=True,
    )
    plan = unet_plan(config)
    assert [(b.in_channels, b.out_channels, b.kernel_size) for b in plan.encoder] == [
        (2, 4, (3, 3, 1)),
        (4, 8, (3, 3, 3)),
        (8, 16, (5, 5, 5)),
    ]
    assert plan.pools == ((2, 2, 1), (1, 1, 1))
    assert [plan.pools_into(stage) for stage in range(3)] == [False, True, False]  # all ones: no pool
    assert plan.levels == (1, 0)  # deepest first
    assert [(u.in_channels, u.out_channels, u.factor) for u in plan.up] == [
        (16, 8, (1, 1, 1)),
        (8, 4, (2, 2, 1)),
    ]
    assert [(b.in_channels, b.out_channels, b.kernel_size) for b in plan.decoder] == [
        (16, 8, (3, 3, 3)),  # skip (8) + upsampled (8)
        (8, 4, (3, 3, 1)),
    ]
    assert plan.head == ConvSpec(4, 3, 1)
    assert plan.aux_levels == (1,) and plan.aux_heads == (ConvSpec(8, 3, 1),)
    without = unet_plan(dataclasses.replace(config, deep_supervision=False))
    assert without.aux_levels == () and without.aux_heads == ()


def test_unet_plan_parameters_match_a_count_by_hand():
    # features (4, 8), 1 -> 2 classes, 2D, plain blocks, transposed conv (test_param_counts' sum)
    plan = unet_plan(UNetConfig(in_channels=1, num_classes=2, features=(4, 8)))
    blocks = [*plan.encoder, *plan.decoder]
    total = sum(c.parameters(2) + 2 * c.out_channels for b in blocks for c in b.convs)
    total += sum(u.conv.parameters(2) for u in plan.up) + plan.head.parameters(2)
    assert total == 196 + 896 + 132 + 448 + 10


# -------------------------------------------------------------------------------------- DCGAN


def transposed_size(size, spec):
    return (size - 1) * spec.stride - 2 * spec.padding + spec.kernel_size


def conv_size(size, spec):
    return (size + 2 * spec.padding - spec.kernel_size) // spec.stride + 1


def test_dcgan_generator_plan_by_hand():
    plan = dcgan_generator_plan(
        DCGANGeneratorConfig(latent_dim=8, out_channels=2, image_size=16, base_features=4)
    )
    assert plan.convs == (
        ConvSpec(8, 8, 4, stride=1, padding=0, bias=False),
        ConvSpec(8, 4, 4, stride=2, padding=1, bias=False),
    )
    assert plan.norms == (8, 4)
    assert plan.out == ConvSpec(4, 2, 4, stride=2, padding=1, bias=True)
    sizes = [1]
    for spec in (*plan.convs, plan.out):
        sizes.append(transposed_size(sizes[-1], spec))
    assert sizes == [1, 4, 8, 16]


def test_dcgan_discriminator_plan_by_hand():
    plan = dcgan_discriminator_plan(DCGANDiscriminatorConfig(in_channels=2, image_size=16, base_features=4))
    assert plan.convs == (
        ConvSpec(2, 4, 4, stride=2, padding=1, bias=False),
        ConvSpec(4, 8, 4, stride=2, padding=1, bias=False),
    )
    assert plan.norms == (8,)  # batch norm from the second conv on
    assert plan.out == ConvSpec(8, 1, 4)
    sizes = [16]
    for spec in (*plan.convs, plan.out):
        sizes.append(conv_size(sizes[-1], spec))
    assert sizes == [16, 8, 4, 1]


def test_dcgan_plans_have_the_pytorch_tutorial_counts():
    # the PyTorch DCGAN tutorial (nz=100, ngf=ndf=64, nc=3, 64x64), every conv bias-free: 3,576,704
    # and 2,765,568; Delira keeps a bias on each last layer (+3, +1)
    gen = dcgan_generator_plan(DCGANGeneratorConfig(out_channels=3))
    disc = dcgan_discriminator_plan(DCGANDiscriminatorConfig(in_channels=3))
    count = sum(c.parameters(2) for c in (*gen.convs, gen.out)) + sum(2 * c for c in gen.norms)
    assert count == 3_576_704 + 3
    count = sum(c.parameters(2) for c in (*disc.convs, disc.out)) + sum(2 * c for c in disc.norms)
    assert count == 2_765_568 + 1
    plan = dcgan_plan(DCGANConfig(channels=3, image_size=32, generator_features=8))
    assert plan.generator == DCGANGeneratorConfig(out_channels=3, image_size=32, base_features=8)
    assert plan.discriminator == DCGANDiscriminatorConfig(in_channels=3, image_size=32, base_features=64)


def test_plans_import_no_framework():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import delira.models._constructors, delira.models._plans\n"
        "assert not {'torch', 'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------- the shared constructors


CONFIGS = {
    "ResNet": ResNetConfig,
    "UNet": UNetConfig,
    "DCGANGenerator": DCGANGeneratorConfig,
    "DCGANDiscriminator": DCGANDiscriminatorConfig,
    "DCGAN": DCGANConfig,
}


@pytest.mark.parametrize(
    "backend", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]
)
def test_constructors_take_the_config_fields_with_their_defaults(backend):
    from delira.models.registry import import_backend

    module = import_backend(backend)
    for name, config in CONFIGS.items():
        parameters = inspect.signature(getattr(module, name)).parameters
        expected = [(f.name, f.default) for f in dataclasses.fields(config)]
        assert [(p.name, p.default) for p in parameters.values()] == expected, name
        assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters.values())
