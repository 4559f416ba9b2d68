"""ResNet-18/34/50 for 2D and 3D classification in PyTorch (He et al. 2016, stride on the 3x3 conv)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from delira.models.configs import ResNetConfig
from delira.models.input_size import check_input_shape
from delira.models.torch import layers
from delira.models.torch.network import AbstractNetwork

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: ``(N, in_channels, *S) -> (N, width, *ceil(S / stride))``."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1 = layers.conv(spatial_dims, in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.norm1 = layers.norm("batch", spatial_dims, width)
        self.conv2 = layers.conv(spatial_dims, width, width, 3, padding=1, bias=False)
        self.norm2 = layers.norm("batch", spatial_dims, width)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, width, stride, "batch")
            if stride != 1 or in_channels != width
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + skip)


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3 (``stride``), 1x1 (expand x4) conv-BN layers and a shortcut:
    ``(N, in_channels, *S) -> (N, 4 * width, *ceil(S / stride))``."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int):
        super().__init__()
        out_channels = 4 * width
        self.conv1 = layers.conv(spatial_dims, in_channels, width, 1, bias=False)
        self.norm1 = layers.norm("batch", spatial_dims, width)
        self.conv2 = layers.conv(spatial_dims, width, width, 3, stride=stride, padding=1, bias=False)
        self.norm2 = layers.norm("batch", spatial_dims, width)
        self.conv3 = layers.conv(spatial_dims, width, out_channels, 1, bias=False)
        self.norm3 = layers.norm("batch", spatial_dims, out_channels)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, out_channels, stride, "batch")
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = torch.relu(self.norm1(self.conv1(x)))
        out = torch.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + skip)


class ResNet(AbstractNetwork):
    """ResNet classifier, 2D or 3D.

    Stem (7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2), four stages of residual blocks
    (stride 2 at the start of stages 2-4), global average pooling, a linear layer.

    Args:
        depth: 18, 34 or 50.
        spatial_dims: 2 or 3.
        in_channels: channels C of the input.
        num_classes: number of output logits K.
        width: channels after the stem (64 in the published network).

    Input ``(N, C, *spatial) float32`` (any spatial size >= 1); output logits ``(N, K) float32``.
    Batch key ``"label"``: ``(N,) int`` class indices.
    """

    target_key = "label"

    def __init__(
        self,
        depth: int = 18,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 64,
    ):
        super().__init__()
        cfg = ResNetConfig(depth, spatial_dims, in_channels, num_classes, width)
        self._config = cfg
        self._input_rule = cfg.input_rule()
        block = Bottleneck if cfg.bottleneck else BasicBlock
        self.conv1 = layers.conv(spatial_dims, in_channels, width, 7, stride=2, padding=3, bias=False)
        self.norm1 = layers.norm("batch", spatial_dims, width)
        self.pool = layers.max_pool(spatial_dims, 3, stride=2, padding=1)
        channels = width
        for index, (stage_width, count) in enumerate(zip(cfg.stage_widths, cfg.blocks_per_stage)):
            blocks = []
            for b in range(count):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(block(spatial_dims, channels, stage_width, stride))
                channels = stage_width * cfg.expansion
            setattr(self, f"layer{index + 1}", nn.ModuleList(blocks))
        self.fc = nn.Linear(cfg.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial) float32 -> (N, num_classes) float32`` logits."""
        cfg = self._config
        check_input_shape(
            tuple(x.shape),
            model=cfg.name,
            spatial_dims=cfg.spatial_dims,
            channels=cfg.in_channels,
            rule=self._input_rule,
        )
        x = self.pool(torch.relu(self.norm1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x)
        x = x.mean(dim=tuple(range(2, x.dim())))
        return self.fc(x)


def resnet18(**kwargs: Any) -> ResNet:
    """``ResNet(depth=18, **kwargs)``."""
    return ResNet(depth=18, **kwargs)


def resnet34(**kwargs: Any) -> ResNet:
    """``ResNet(depth=34, **kwargs)``."""
    return ResNet(depth=34, **kwargs)


def resnet50(**kwargs: Any) -> ResNet:
    """``ResNet(depth=50, **kwargs)``."""
    return ResNet(depth=50, **kwargs)
