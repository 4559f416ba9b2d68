"""Dimension-generic PyTorch building blocks: conv, transposed conv, norms, pooling, upsampling.

Every norm here has a TensorFlow twin with the same math (``delira.models.tf.layers``): batch norm
with eps 1e-5 and momentum 0.1 (Keras momentum 0.9), instance norm with eps 1e-5, an affine
scale/shift and no running statistics (the same in train and eval mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from delira.models._plans import Size, same_padding

__all__ = [
    "BATCH_NORM_EPS",
    "BATCH_NORM_MOMENTUM",
    "INSTANCE_NORM_EPS",
    "Projection",
    "conv",
    "conv_transpose",
    "max_pool",
    "norm",
    "same_padding",
    "upsample_linear",
]

BATCH_NORM_EPS = 1e-5
BATCH_NORM_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch
INSTANCE_NORM_EPS = 1e-5


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Size,
    stride: Size = 1,
    padding: Size = 0,
    bias: bool = True,
) -> nn.Module:
    """``nn.Conv2d`` or ``nn.Conv3d``: ``(N, in_channels, *S) -> (N, out_channels, *S')`` with
    ``S' = (S + 2 * padding - kernel_size) // stride + 1`` per axis; ``kernel_size``, ``stride``
    and ``padding`` are ints (every axis) or one int per spatial axis."""
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return cls(
        in_channels, out_channels, _size(kernel_size), stride=_size(stride), padding=_size(padding), bias=bias
    )


def _size(value: Size) -> int | tuple[int, ...]:
    return value if isinstance(value, int) else tuple(int(v) for v in value)


def conv_transpose(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: Size,
    stride: Size = 1,
    padding: Size = 0,
    bias: bool = True,
) -> nn.Module:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``: ``(N, in_channels, *S) -> (N, out_channels, *S')``
    with ``S' = (S - 1) * stride - 2 * padding + kernel_size`` per axis (ints or one per axis)."""
    cls = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return cls(
        in_channels, out_channels, _size(kernel_size), stride=_size(stride), padding=_size(padding), bias=bias
    )


def norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation over ``(N, channels, *S)``: ``"batch"`` or ``"instance"`` (affine, no running stats)."""
    if kind == "batch":
        cls = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        return cls(channels, eps=BATCH_NORM_EPS, momentum=BATCH_NORM_MOMENTUM)
    if kind == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, eps=INSTANCE_NORM_EPS, affine=True, track_running_stats=False)
    raise ValueError(f"norm must be 'batch' or 'instance'; got {kind!r}")


def max_pool(spatial_dims: int, kernel_size: Size, stride: Size, padding: Size = 0) -> nn.Module:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d`` (padding counts as -inf); sizes are ints or one per axis:
    ``(N, C, *S) -> (N, C, *((S + 2 * padding - kernel_size) // stride + 1))``."""
    cls = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    return cls(_size(kernel_size), stride=_size(stride), padding=_size(padding))


def upsample_linear(x: torch.Tensor, scale_factor: Size = 2) -> torch.Tensor:
    """Bilinear (4D input) or trilinear (5D input) upsampling by integer factors with
    ``align_corners=False``: ``(N, C, *S) -> (N, C, *(S * scale_factor))``, same dtype;
    ``scale_factor`` is an int (every axis) or one int per spatial axis (1: that axis unchanged)."""
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    factor = float(scale_factor) if isinstance(scale_factor, int) else tuple(float(f) for f in scale_factor)
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)


class Projection(nn.Module):
    """The shortcut of a residual block whose shape changes: 1x1 conv (no bias, ``stride``) + norm.

    ``(N, in_channels, *S) -> (N, out_channels, *ceil(S / stride))``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int, norm_kind: str):
        super().__init__()
        self.conv = conv(spatial_dims, in_channels, out_channels, 1, stride=stride, bias=False)
        self.norm = norm(norm_kind, spatial_dims, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x``."""
        return self.norm(self.conv(x))
