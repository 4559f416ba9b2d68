"""ResNet-18/34/50 for 2D and 3D classification in Keras 3 (the twin of ``delira.models.torch.resnet``)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from delira.models.configs import ResNetConfig
from delira.models.input_size import check_input_shape
from delira.models.tf import layers
from delira.models.tf.network import AbstractNetwork

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


class BasicBlock(keras.layers.Layer):
    """Two 3x3 conv-BN layers and a shortcut, channels last:
    ``(N, *S, in_channels) -> (N, *ceil(S / stride), width)``."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.conv1 = layers.Conv(spatial_dims, in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.norm1 = layers.batch_norm(spatial_dims, width)
        self.conv2 = layers.Conv(spatial_dims, width, width, 3, padding=1, bias=False)
        self.norm2 = layers.batch_norm(spatial_dims, width)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, width, stride, "batch")
            if stride != 1 or in_channels != width
            else None
        )

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Apply the block."""
        out = ops.relu(self.norm1(self.conv1(x), training=training))
        out = self.norm2(self.conv2(out), training=training)
        skip = x if self.shortcut is None else self.shortcut(x, training=training)
        return ops.relu(out + skip)


class Bottleneck(keras.layers.Layer):
    """1x1 (reduce), 3x3 (``stride``), 1x1 (expand x4) conv-BN layers and a shortcut, channels last:
    ``(N, *S, in_channels) -> (N, *ceil(S / stride), 4 * width)``."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int, **kwargs: Any):
        super().__init__(**kwargs)
        out_channels = 4 * width
        self.conv1 = layers.Conv(spatial_dims, in_channels, width, 1, bias=False)
        self.norm1 = layers.batch_norm(spatial_dims, width)
        self.conv2 = layers.Conv(spatial_dims, width, width, 3, stride=stride, padding=1, bias=False)
        self.norm2 = layers.batch_norm(spatial_dims, width)
        self.conv3 = layers.Conv(spatial_dims, width, out_channels, 1, bias=False)
        self.norm3 = layers.batch_norm(spatial_dims, out_channels)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, out_channels, stride, "batch")
            if stride != 1 or in_channels != out_channels
            else None
        )

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Apply the block."""
        out = ops.relu(self.norm1(self.conv1(x), training=training))
        out = ops.relu(self.norm2(self.conv2(out), training=training))
        out = self.norm3(self.conv3(out), training=training)
        skip = x if self.shortcut is None else self.shortcut(x, training=training)
        return ops.relu(out + skip)


class ResNet(AbstractNetwork):
    """ResNet classifier, 2D or 3D, as ``delira.models.torch.ResNet``.

    Stem (7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2), four stages of residual blocks
    (stride 2 at the start of stages 2-4), global average pooling, a dense layer.

    Args:
        depth: 18, 34 or 50.
        spatial_dims: 2 or 3.
        in_channels: channels C of the input.
        num_classes: number of output logits K.
        width: channels after the stem (64 in the published network).

    Input ``(N, C, *spatial) float32`` channels first (any spatial size >= 1); output logits
    ``(N, K) float32``. Batch key ``"label"``: ``(N,) int`` class indices.
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
        self.conv1 = layers.Conv(spatial_dims, in_channels, width, 7, stride=2, padding=3, bias=False)
        self.norm1 = layers.batch_norm(spatial_dims, width)
        channels = width
        for index, (stage_width, count) in enumerate(zip(cfg.stage_widths, cfg.blocks_per_stage)):
            blocks = []
            for b in range(count):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(block(spatial_dims, channels, stage_width, stride))
                channels = stage_width * cfg.expansion
            setattr(self, f"layer{index + 1}", blocks)
        self.fc = layers.dense(cfg.out_features, num_classes)
        self.built = True  # every weight exists already

    def call(self, x: Any, training: bool | None = None) -> Any:
        """``(N, C, *spatial) float32 -> (N, num_classes) float32`` logits."""
        cfg = self._config
        check_input_shape(
            tuple(x.shape),
            model=cfg.name,
            spatial_dims=cfg.spatial_dims,
            channels=cfg.in_channels,
            rule=self._input_rule,
        )
        x = layers.to_channels_last(x)
        x = ops.relu(self.norm1(self.conv1(x), training=training))
        x = layers.max_pool(x, 3, stride=2, padding=1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x, training=training)
        x = ops.mean(x, axis=tuple(range(1, len(x.shape) - 1)))
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
