"""UNet for 2D and 3D segmentation in PyTorch (Ronneberger et al. 2015; Çiçek et al. 2016 in 3D)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from delira.models._constructors import UNetConstructor
from delira.models._plans import Size, UNetBlockPlan, UNetPlan, UNetUpPlan
from delira.models.torch import layers
from delira.models.torch.network import AbstractNetwork

__all__ = ["PlainBlock", "ResidualBlock", "UNet", "UpConv"]


class PlainBlock(nn.Module):
    """Two (conv, norm, ReLU) layers with ``kernel_size`` (3x3 by default; an int or one per axis)
    and "same" padding: ``(N, in_channels, *S) -> (N, out_channels, *S)``."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, kernel_size: Size = 3
    ):
        super().__init__()
        conv1, conv2 = UNetBlockPlan(in_channels, out_channels, kernel_size).convs
        self.conv1 = layers.conv(spatial_dims, **conv1.arguments())
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.conv(spatial_dims, **conv2.arguments())
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(x)))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU, conv-norm (``kernel_size``, 3x3 by default, "same" padding), plus a shortcut
    (1x1 conv-norm if channels change), ReLU: ``(N, in_channels, *S) -> (N, out_channels, *S)``."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, norm: str, kernel_size: Size = 3
    ):
        super().__init__()
        plan = UNetBlockPlan(in_channels, out_channels, kernel_size)
        conv1, conv2 = plan.convs
        self.conv1 = layers.conv(spatial_dims, **conv1.arguments())
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.conv(spatial_dims, **conv2.arguments())
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, out_channels, 1, norm) if plan.projects else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + skip)


class UpConv(nn.Module):
    """Upsample by ``factor`` (2 by default; an int or one per axis):
    ``(N, in_channels, *S) -> (N, out_channels, *(S * factor))``.

    ``"transpose"``: a transposed conv with kernel = stride = ``factor`` (2x2, stride 2 by
    default); ``"interpolate"``: linear upsampling by ``factor`` (align_corners=False) then a 1x1
    conv.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, mode: str, factor: Size = 2):
        super().__init__()
        self.mode = mode
        self.factor = factor if isinstance(factor, int) else tuple(int(f) for f in factor)
        plan = UNetUpPlan(in_channels, out_channels, self.factor, mode)
        self.interpolates = plan.interpolates
        build = layers.conv_transpose if mode == "transpose" else layers.conv
        self.conv = build(spatial_dims, **plan.conv.arguments())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``."""
        if self.interpolates:
            x = layers.upsample_linear(x, self.factor)
        return self.conv(x)


class UNet(UNetConstructor, AbstractNetwork):
    """UNet, 2D or 3D, with plain or residual blocks, instance or batch norm.

    Encoder: a block per stage, max-pooling by ``strides[i]`` (kernel = stride, per axis; 2x2 by
    default; none for an all-ones stride) before stage ``i``. Decoder: per stage, upsampling by the
    same factor, concatenation ``[skip, upsampled]`` along channels, a block. The blocks of stage
    ``i`` use ``kernel_sizes[i]`` (3 by default). A 1x1 conv gives the logits.

    Args: as ``delira.models.configs.UNetConfig``: ``spatial_dims``, ``in_channels``,
    ``num_classes``, ``features`` or ``base_features`` + ``num_stages``, ``norm``
    (``"instance"``/``"batch"``), ``block`` (``"plain"``/``"residual"``), ``upsample``
    (``"transpose"``/``"interpolate"``), ``deep_supervision``, ``strides``, ``kernel_sizes``.

    Input ``(N, C, *spatial) float32``, sizes divisible per axis by the product of the strides
    along it (``2**(num_stages - 1)`` by default). Output logits ``(N, num_classes, *spatial)
    float32``; with ``deep_supervision`` a list of ``num_stages - 1`` of them, full resolution
    first, the one of decoder level ``k`` of size ``spatial // config.cumulative_strides[k]``
    (half the size of the one before by default). Batch key ``"seg"``: ``(N, 1, *spatial) int``
    labels.
    """

    # __init__ (arguments, defaults, validation): UNetConstructor

    def _build_layers(self, plan: UNetPlan) -> None:
        cfg = self._config
        dims, norm = cfg.spatial_dims, cfg.norm
        block_cls = ResidualBlock if cfg.block == "residual" else PlainBlock
        # pools[i - 1] pools into stage i (weightless: the state dict is the same as with one pool)
        self.pools = nn.ModuleList(layers.max_pool(dims, s, stride=s) for s in plan.pools)
        self.encoder = nn.ModuleList(
            block_cls(dims, b.in_channels, b.out_channels, norm, b.kernel_size) for b in plan.encoder
        )
        self.up = nn.ModuleList(
            UpConv(dims, u.in_channels, u.out_channels, u.mode, u.factor) for u in plan.up
        )
        self.decoder = nn.ModuleList(
            block_cls(dims, b.in_channels, b.out_channels, norm, b.kernel_size) for b in plan.decoder
        )
        self.head = layers.conv(dims, **plan.head.arguments())
        # deep supervision: heads on the decoder outputs at levels 1, 2, ..., num_stages - 2
        self.aux_heads = nn.ModuleList(layers.conv(dims, **h.arguments()) for h in plan.aux_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``(N, C, *S) float32 -> (N, num_classes, *S) float32`` logits (a list with deep supervision)."""
        self._check_input(x.shape)
        plan = self._plan
        skips = []
        for level, block in enumerate(self.encoder):
            if plan.pools_into(level):
                x = self.pools[level - 1](x)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
            outputs.append(x)
        main = self.head(outputs[-1])
        if not self._config.deep_supervision:
            return main
        # outputs[-2 - k] is the decoder output at level k + 1 (cumulative_strides[k + 1] smaller)
        return [main, *(head(outputs[-2 - k]) for k, head in enumerate(self.aux_heads))]

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(data, seg)`` with the channel axis of ``seg`` dropped: ``(N, *spatial) int64``."""
        data, seg = super().split_batch(batch)
        if seg.dim() == self._config.spatial_dims + 2:
            seg = seg[:, 0]
        return data, seg.long()
