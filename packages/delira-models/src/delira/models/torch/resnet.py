"""ResNet-18/34/50 for 2D and 3D classification in PyTorch (He et al. 2016, stride on the 3x3 conv)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from delira.models._constructors import ResNetConstructor
from delira.models._plans import ResNetBlockPlan, ResNetPlan
from delira.models.torch import layers
from delira.models.torch.network import AbstractNetwork

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def _shortcut(spatial_dims: int, plan: ResNetBlockPlan) -> layers.Projection | None:
    """The block's projection shortcut, or None for the identity."""
    if not plan.projects:
        return None
    return layers.Projection(spatial_dims, plan.in_channels, plan.out_channels, plan.stride, "batch")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: ``(N, in_channels, *S) -> (N, width, *ceil(S / stride))``."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int):
        super().__init__()
        plan = ResNetBlockPlan(in_channels, width, stride, bottleneck=False)
        conv1, conv2 = plan.convs
        self.conv1 = layers.conv(spatial_dims, **conv1.arguments())
        self.norm1 = layers.norm("batch", spatial_dims, conv1.out_channels)
        self.conv2 = layers.conv(spatial_dims, **conv2.arguments())
        self.norm2 = layers.norm("batch", spatial_dims, conv2.out_channels)
        self.shortcut = _shortcut(spatial_dims, plan)

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
        plan = ResNetBlockPlan(in_channels, width, stride, bottleneck=True)
        conv1, conv2, conv3 = plan.convs
        self.conv1 = layers.conv(spatial_dims, **conv1.arguments())
        self.norm1 = layers.norm("batch", spatial_dims, conv1.out_channels)
        self.conv2 = layers.conv(spatial_dims, **conv2.arguments())
        self.norm2 = layers.norm("batch", spatial_dims, conv2.out_channels)
        self.conv3 = layers.conv(spatial_dims, **conv3.arguments())
        self.norm3 = layers.norm("batch", spatial_dims, conv3.out_channels)
        self.shortcut = _shortcut(spatial_dims, plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = torch.relu(self.norm1(self.conv1(x)))
        out = torch.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + skip)


class ResNet(ResNetConstructor, AbstractNetwork):
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

    # __init__ (arguments, defaults, validation): ResNetConstructor

    def _build_layers(self, plan: ResNetPlan) -> None:
        dims = self._config.spatial_dims
        self.conv1 = layers.conv(dims, **plan.stem.arguments())
        self.norm1 = layers.norm("batch", dims, plan.stem.out_channels)
        self.pool = layers.max_pool(dims, **plan.pool.arguments())
        for index, stage in enumerate(plan.stages):
            blocks = [
                (Bottleneck if b.bottleneck else BasicBlock)(dims, b.in_channels, b.width, b.stride)
                for b in stage
            ]
            setattr(self, f"layer{index + 1}", nn.ModuleList(blocks))
        self.fc = nn.Linear(plan.in_features, plan.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *spatial) float32 -> (N, num_classes) float32`` logits."""
        self._check_input(x.shape)
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
