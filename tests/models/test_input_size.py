"""Valid input sizes, without either framework, and the errors for sizes a network cannot take."""

from __future__ import annotations

import re

import numpy as np
import pytest

from delira.models import InputSizeRule, check_input_size, input_size_rule, valid_input_sizes


def test_unet_rule_is_divisibility_by_two_to_the_poolings():
    for stages in (2, 3, 4, 5):
        factor = 2 ** (stages - 1)
        sizes = valid_input_sizes("unet", limit=100, num_stages=stages)
        assert sizes == [n for n in range(1, 101) if n % factor == 0]
    assert valid_input_sizes("unet", limit=40) == [8, 16, 24, 32, 40]  # default: 4 stages
    assert valid_input_sizes("unet", limit=40, features=(8, 16, 32)) == list(range(4, 41, 4))
    assert input_size_rule("unet", num_stages=4).describe() == "multiples of 8"


def test_unet_error_names_size_axis_and_nearest_valid_sizes():
    with pytest.raises(ValueError) as info:
        check_input_size("unet", (32, 30, 32), spatial_dims=3, num_stages=4)
    message = str(info.value)
    assert "UNet with 4 stages needs spatial sizes divisible by 8; got 30 on axis 3" in message
    assert "nearest valid sizes are 24 and 32" in message
    assert "fewer stages" in message  # how to fix it


@pytest.mark.parametrize(
    ("size", "nearest"),
    [(30, (24, 32)), (33, (32, 40)), (9, (8, 16)), (5, (8,)), (1, (8,)), (16, (16,))],
)
def test_nearest_valid_sizes(size, nearest):
    rule = input_size_rule("unet", num_stages=4)
    assert rule.nearest(size) == nearest
    # independent check: brute force over the valid sizes
    valid = [n for n in range(1, 200) if n % 8 == 0]
    below = [n for n in valid if n <= size]
    above = [n for n in valid if n >= size]
    expected = {max(below)} if below else set()
    expected |= {min(above)}
    if size in valid:
        expected = {size}
    assert set(nearest) == expected


def test_resnet_takes_any_positive_size():
    rule = input_size_rule("resnet50")
    assert rule.describe() == "any size >= 1"
    assert valid_input_sizes("resnet18", limit=5) == [1, 2, 3, 4, 5]
    check_input_size("resnet34", (7, 13))  # no error


def test_discriminator_takes_exactly_its_image_size():
    assert valid_input_sizes("dcgan_discriminator", image_size=32) == [32]
    assert valid_input_sizes("dcgan", image_size=16) == [16]
    with pytest.raises(
        ValueError,
        match=r"needs spatial size 32 on every spatial axis; got 30 on axis 2.*nearest valid size is 32",
    ):
        check_input_size("dcgan_discriminator", (30, 32), image_size=32)


def test_generator_has_no_input_size():
    with pytest.raises(ValueError, match="latent vectors"):
        valid_input_sizes("dcgan_generator")


def test_rule_with_a_minimum_above_the_multiple():
    rule = InputSizeRule(model="Net", multiple=4, minimum=10)
    assert rule.sizes(24) == [12, 16, 20, 24]
    assert rule.nearest(9) == (12,)
    assert rule.nearest(13) == (12, 16)
    assert rule.describe() == "multiples of 4, at least 10"


@pytest.mark.parametrize(
    "backend", [pytest.param("torch", marks=pytest.mark.torch), pytest.param("tf", marks=pytest.mark.tf)]
)
def test_models_raise_the_same_errors(backend):
    from delira.models import get_model

    unet = get_model("unet", backend=backend, spatial_dims=2, base_features=2, num_stages=4)
    expected = "UNet with 4 stages needs spatial sizes divisible by 8; got 30 on axis 2 (input spatial shape (30, 32)); nearest valid sizes are 24 and 32"
    with pytest.raises(ValueError, match=re.escape(expected)):
        unet(np.zeros((1, 1, 30, 32), np.float32) if backend == "tf" else _torch_zeros((1, 1, 30, 32)))
    with pytest.raises(ValueError, match=re.escape("built for 1 input channel(s) but got 3")):
        unet(np.zeros((1, 3, 32, 32), np.float32) if backend == "tf" else _torch_zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match=re.escape("needs channels-first input of shape (N, C, H, W)")):
        unet(
            np.zeros((1, 1, 32, 32, 32), np.float32) if backend == "tf" else _torch_zeros((1, 1, 32, 32, 32))
        )
    gen = get_model("dcgan_generator", backend=backend, latent_dim=8, image_size=8, base_features=2)
    with pytest.raises(ValueError, match=re.escape("takes latent vectors of shape (N, 8); got shape (2, 7)")):
        gen(np.zeros((2, 7), np.float32) if backend == "tf" else _torch_zeros((2, 7)))


def _torch_zeros(shape):
    import torch

    return torch.zeros(shape)
