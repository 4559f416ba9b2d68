"""Parameter counts against independent references: published figures and counts done by hand.

Both frameworks count the same (``test_convert.py``); here the PyTorch count meets the reference.
Large networks are built on PyTorch's meta device: shapes only, no memory, no time.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch


def meta_count(name, **kwargs):
    import torch

    from delira.models import get_model

    with torch.device("meta"):
        return get_model(name, backend="torch", **kwargs).num_parameters()


@pytest.mark.parametrize(
    ("name", "published"),
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_resnets_match_the_published_imagenet_counts(name, published):
    # torchvision's ImageNet ResNets (3 input channels, 1000 classes, width 64)
    assert meta_count(name, in_channels=3, num_classes=1000) == published


def test_dcgan_matches_the_pytorch_tutorial_counts():
    # The PyTorch DCGAN tutorial (nz=100, ngf=ndf=64, nc=3, 64x64) has 3,576,704 and 2,765,568
    # parameters with every conv bias-free; Delira keeps a bias on each last layer: +3 and +1.
    assert meta_count("dcgan_generator", out_channels=3) == 3_576_704 + 3
    assert meta_count("dcgan_discriminator", in_channels=3) == 2_765_568 + 1
    assert meta_count("dcgan", channels=3) == 3_576_707 + 2_765_569


def conv(c_in, c_out, k, dims, bias=False):
    return c_in * c_out * k**dims + (c_out if bias else 0)


def norm(c):
    return 2 * c


@pytest.mark.parametrize("dims", [2, 3])
def test_small_unet_by_hand(dims):
    # features (4, 8), 1 -> 2 classes, plain blocks, instance norm, transposed conv
    enc0 = conv(1, 4, 3, dims) + norm(4) + conv(4, 4, 3, dims) + norm(4)
    enc1 = conv(4, 8, 3, dims) + norm(8) + conv(8, 8, 3, dims) + norm(8)
    up = conv(8, 4, 2, dims, bias=True)  # 2x2 transposed conv, stride 2
    dec = conv(8, 4, 3, dims) + norm(4) + conv(4, 4, 3, dims) + norm(4)  # input: skip + upsampled
    head = conv(4, 2, 1, dims, bias=True)
    expected = enc0 + enc1 + up + dec + head
    if dims == 2:
        assert expected == 196 + 896 + 132 + 448 + 10  # the same sum, term by term
    assert meta_count("unet", spatial_dims=dims, in_channels=1, num_classes=2, features=(4, 8)) == expected


def test_small_unet_variants_by_hand():
    dims = 2
    plain = meta_count("unet", in_channels=1, num_classes=2, features=(4, 8))
    # residual blocks add a 1x1 projection + norm wherever the channels change: 1->4, 4->8, 8->4
    residual = meta_count("unet", in_channels=1, num_classes=2, features=(4, 8), block="residual")
    assert residual - plain == sum(conv(a, b, 1, dims) + norm(b) for a, b in [(1, 4), (4, 8), (8, 4)])
    # interpolation replaces the 2x2 transposed conv (8*4*4 + 4) by a 1x1 conv (8*4 + 4)
    interp = meta_count("unet", in_channels=1, num_classes=2, features=(4, 8), upsample="interpolate")
    assert plain - interp == (8 * 4 * 4 + 4) - (8 * 4 + 4)
    # batch norm has the same two affine parameters per channel as instance norm
    assert meta_count("unet", in_channels=1, num_classes=2, features=(4, 8), norm="batch") == plain
    # deep supervision adds a 1x1 head (conv + bias) on the decoder output at each lower level
    three = dict(in_channels=1, num_classes=2, features=(4, 8, 16))
    assert meta_count("unet", deep_supervision=True, **three) - meta_count("unet", **three) == conv(
        8, 2, 1, 2, True
    )


@pytest.mark.parametrize("dims", [2, 3])
def test_small_resnet18_by_hand(dims):
    w, c_in, classes = 4, 2, 3
    stem = conv(c_in, w, 7, dims) + norm(w)

    def basic(a, b, projection):
        out = conv(a, b, 3, dims) + norm(b) + conv(b, b, 3, dims) + norm(b)
        return out + (conv(a, b, 1, dims) + norm(b) if projection else 0)

    stages = basic(w, w, False) + basic(w, w, False)
    for prev, cur in [(w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)]:
        stages += basic(prev, cur, True) + basic(cur, cur, False)
    fc = 8 * w * classes + classes
    expected = stem + stages + fc
    assert (
        meta_count("resnet18", spatial_dims=dims, in_channels=c_in, num_classes=classes, width=w) == expected
    )


def test_small_dcgan_by_hand():
    # 16x16 images, 2 channels, latent 8, base features 4: generator 8 -> 8 (4x4) -> 4 (8x8) -> 2 (16x16)
    g = conv(8, 8, 4, 2) + norm(8) + conv(8, 4, 4, 2) + norm(4) + conv(4, 2, 4, 2, bias=True)
    # discriminator 2 -> 4 (8x8) -> 8 (4x4, norm) -> 1 logit
    d = conv(2, 4, 4, 2) + conv(4, 8, 4, 2) + norm(8) + conv(8, 1, 4, 2, bias=True)
    assert meta_count("dcgan_generator", latent_dim=8, out_channels=2, image_size=16, base_features=4) == g
    assert meta_count("dcgan_discriminator", in_channels=2, image_size=16, base_features=4) == d
