"""UNet for 2D and 3D segmentation in Keras 3 (the twin of ``delira.models.torch.unet``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from delira.models._constructors import UNetConstructor
from delira.models._plans import Size, UNetBlockPlan, UNetPlan, UNetUpPlan
from delira.models.tf import layers
from delira.models.tf.network import AbstractNetwork

__all__ = ["PlainBlock", "ResidualBlock", "UNet", "UpConv"]


class PlainBlock(keras.layers.Layer):
    """Two (conv, norm, ReLU) layers with ``kernel_size`` (3x3 by default; an int or one per axis)
    and "same" padding, channels last: ``(N, *S, in_channels) -> (N, *S, out_channels)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str,
        kernel_size: Size = 3,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        conv1, conv2 = UNetBlockPlan(in_channels, out_channels, kernel_size).convs
        self.conv1 = layers.Conv(spatial_dims, **conv1.arguments())
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.Conv(spatial_dims, **conv2.arguments())
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Apply the block."""
        x = ops.relu(self.norm1(self.conv1(x), training=training))
        return ops.relu(self.norm2(self.conv2(x), training=training))


class ResidualBlock(keras.layers.Layer):
    """conv-norm-ReLU, conv-norm (``kernel_size``, 3x3 by default, "same" padding), plus a shortcut
    (1x1 conv-norm if channels change), ReLU; channels last:
    ``(N, *S, in_channels) -> (N, *S, out_channels)``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm: str,
        kernel_size: Size = 3,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        plan = UNetBlockPlan(in_channels, out_channels, kernel_size)
        conv1, conv2 = plan.convs
        self.conv1 = layers.Conv(spatial_dims, **conv1.arguments())
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.Conv(spatial_dims, **conv2.arguments())
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, out_channels, 1, norm) if plan.projects else None
        )

    def call(self, x: Any, training: bool | None = None) -> Any:
        """Apply the block."""
        out = ops.relu(self.norm1(self.conv1(x), training=training))
        out = self.norm2(self.conv2(out), training=training)
        skip = x if self.shortcut is None else self.shortcut(x, training=training)
        return ops.relu(out + skip)


class UpConv(keras.layers.Layer):
    """Upsample by ``factor`` (2 by default; an int or one per axis), channels last:
    ``(N, *S, in_channels) -> (N, *(S * factor), out_channels)``.

    ``"transpose"``: a transposed conv with kernel = stride = ``factor`` (2x2, stride 2 by
    default); ``"interpolate"``: linear upsampling by ``factor`` (align_corners=False) then a 1x1
    conv.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mode: str,
        factor: Size = 2,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.mode = mode
        self.factor = factor if isinstance(factor, int) else tuple(int(f) for f in factor)
        plan = UNetUpPlan(in_channels, out_channels, self.factor, mode)
        self.interpolates = plan.interpolates
        build = layers.ConvTranspose if mode == "transpose" else layers.Conv
        self.conv = build(spatial_dims, **plan.conv.arguments())

    def call(self, x: Any) -> Any:
        """Upsample ``x``."""
        if self.interpolates:
            x = layers.upsample_linear(x, self.factor)
        return self.conv(x)


class UNet(UNetConstructor, AbstractNetwork):
    """UNet, 2D or 3D, with plain or residual blocks, instance or batch norm, as ``delira.models.torch.UNet``.

    Encoder: a block per stage, max-pooling by ``strides[i]`` (kernel = stride, per axis; 2x2 by
    default; none for an all-ones stride) before stage ``i``. Decoder: per stage, upsampling by the
    same factor, concatenation ``[skip, upsampled]`` along channels, a block. The blocks of stage
    ``i`` use ``kernel_sizes[i]`` (3 by default). A 1x1 conv gives the logits.

    Args: as ``delira.models.configs.UNetConfig``: ``spatial_dims``, ``in_channels``,
    ``num_classes``, ``features`` or ``base_features`` + ``num_stages``, ``norm``
    (``"instance"``/``"batch"``), ``block`` (``"plain"``/``"residual"``), ``upsample``
    (``"transpose"``/``"interpolate"``), ``deep_supervision``, ``strides``, ``kernel_sizes``.

    Input ``(N, C, *spatial) float32`` channels first, sizes divisible per axis by the product of
    the strides along it (``2**(num_stages - 1)`` by default). Output logits
    ``(N, num_classes, *spatial) float32`` channels first; with ``deep_supervision`` a list of
    ``num_stages - 1`` of them, full resolution first, the one of decoder level ``k`` of size
    ``spatial // config.cumulative_strides[k]`` (half the size of the one before by default).
    Batch key ``"seg"``: ``(N, 1, *spatial) int`` labels. Keras' cross-entropies want classes
    last: pass ``delira.models.tf.channels_first(keras.losses.SparseCategoricalCrossentropy(from_logits=True))``.
    """

    # __init__ (arguments, defaults, validation): UNetConstructor

    def _build_layers(self, plan: UNetPlan) -> None:
        cfg = self._config
        dims, norm = cfg.spatial_dims, cfg.norm
        block_cls = ResidualBlock if cfg.block == "residual" else PlainBlock
        self.encoder = [
            block_cls(dims, b.in_channels, b.out_channels, norm, b.kernel_size) for b in plan.encoder
        ]
        self.up = [UpConv(dims, u.in_channels, u.out_channels, u.mode, u.factor) for u in plan.up]
        self.decoder = [
            block_cls(dims, b.in_channels, b.out_channels, norm, b.kernel_size) for b in plan.decoder
        ]
        self.head = layers.Conv(dims, **plan.head.arguments())
        self.aux_heads = [layers.Conv(dims, **h.arguments()) for h in plan.aux_heads]
        self.built = True  # every weight exists already

    def call(self, x: Any, training: bool | None = None) -> Any:
        """``(N, C, *S) float32 -> (N, num_classes, *S) float32`` logits (a list with deep supervision)."""
        self._check_input(x.shape)
        plan = self._plan
        x = layers.to_channels_last(x)
        skips = []
        for level, block in enumerate(self.encoder):
            if plan.pools_into(level):
                factor = plan.pools[level - 1]
                x = layers.max_pool(x, factor, stride=factor)
            x = block(x, training=training)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, block in zip(self.up, self.decoder):
            x = block(ops.concatenate([skips.pop(), up(x)], axis=-1), training=training)
            outputs.append(x)
        main = layers.to_channels_first(self.head(outputs[-1]))
        if not self._config.deep_supervision:
            return main
        aux = [layers.to_channels_first(head(outputs[-2 - k])) for k, head in enumerate(self.aux_heads)]
        return [main, *aux]

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(data, seg)`` with the channel axis of ``seg`` dropped: ``(N, *spatial) int64``."""
        data, seg = super().split_batch(batch)
        if len(seg.shape) == self._config.spatial_dims + 2:
            seg = seg[:, 0]
        return data, tf.cast(seg, tf.int64)
