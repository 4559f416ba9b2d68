"""UNet for 2D and 3D segmentation in Keras 3 (the twin of ``delira.models.torch.unet``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from delira.models._steps import deep_supervision_weights
from delira.models.configs import UNetConfig
from delira.models.input_size import check_input_shape
from delira.models.tf import layers
from delira.models.tf.layers import Size
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
        pad = layers.same_padding(kernel_size)
        self.conv1 = layers.Conv(
            spatial_dims, in_channels, out_channels, kernel_size, padding=pad, bias=False
        )
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.Conv(
            spatial_dims, out_channels, out_channels, kernel_size, padding=pad, bias=False
        )
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
        pad = layers.same_padding(kernel_size)
        self.conv1 = layers.Conv(
            spatial_dims, in_channels, out_channels, kernel_size, padding=pad, bias=False
        )
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.Conv(
            spatial_dims, out_channels, out_channels, kernel_size, padding=pad, bias=False
        )
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, out_channels, 1, norm)
            if in_channels != out_channels
            else None
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
        if mode == "transpose":
            self.conv = layers.ConvTranspose(spatial_dims, in_channels, out_channels, factor, stride=factor)
        else:
            self.conv = layers.Conv(spatial_dims, in_channels, out_channels, 1)

    def call(self, x: Any) -> Any:
        """Upsample ``x``."""
        if self.mode == "interpolate":
            x = layers.upsample_linear(x, self.factor)
        return self.conv(x)


def _pools(factor: Size) -> bool:
    """Whether ``factor`` changes the size on some axis (not all ones)."""
    return factor != 1 if isinstance(factor, int) else any(f != 1 for f in factor)


class UNet(AbstractNetwork):
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

    target_key = "seg"

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: Sequence[int] | None = None,
        base_features: int | None = None,
        num_stages: int | None = None,
        norm: str = "instance",
        block: str = "plain",
        upsample: str = "transpose",
        deep_supervision: bool = False,
        strides: Sequence[int | Sequence[int]] | None = None,
        kernel_sizes: Sequence[int | Sequence[int]] | None = None,
    ):
        super().__init__()
        cfg = UNetConfig(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            features=None if features is None else tuple(features),
            base_features=base_features,
            num_stages=num_stages,
            norm=norm,
            block=block,
            upsample=upsample,
            deep_supervision=deep_supervision,
            strides=strides,  # type: ignore[arg-type]
            kernel_sizes=kernel_sizes,  # type: ignore[arg-type]
        )
        self._config = cfg
        self._input_rule = cfg.input_rule()
        feats, stride, kernel = cfg.stage_features, cfg.stage_strides, cfg.stage_kernel_sizes
        block_cls = ResidualBlock if block == "residual" else PlainBlock
        self.encoder = [
            block_cls(spatial_dims, c_in, c_out, norm, kernel[i])
            for i, (c_in, c_out) in enumerate(zip((in_channels, *feats[:-1]), feats))
        ]
        levels = range(len(feats) - 2, -1, -1)  # decoder levels, deepest first
        self.up = [UpConv(spatial_dims, feats[i + 1], feats[i], upsample, stride[i + 1]) for i in levels]
        self.decoder = [block_cls(spatial_dims, 2 * feats[i], feats[i], norm, kernel[i]) for i in levels]
        self.head = layers.Conv(spatial_dims, feats[0], num_classes, 1)
        self.aux_heads = [
            layers.Conv(spatial_dims, feats[i], num_classes, 1)
            for i in (range(1, len(feats) - 1) if cfg.deep_supervision else ())
        ]
        self.built = True  # every weight exists already

    def call(self, x: Any, training: bool | None = None) -> Any:
        """``(N, C, *S) float32 -> (N, num_classes, *S) float32`` logits (a list with deep supervision)."""
        cfg = self._config
        check_input_shape(
            tuple(x.shape),
            model=cfg.name,
            spatial_dims=cfg.spatial_dims,
            channels=cfg.in_channels,
            rule=self._input_rule,
        )
        x = layers.to_channels_last(x)
        skips = []
        for level, block in enumerate(self.encoder):
            factor = cfg.stage_strides[level]
            if level > 0 and _pools(factor):
                x = layers.max_pool(x, factor, stride=factor)
            x = block(x, training=training)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, block in zip(self.up, self.decoder):
            x = block(ops.concatenate([skips.pop(), up(x)], axis=-1), training=training)
            outputs.append(x)
        main = layers.to_channels_first(self.head(outputs[-1]))
        if not cfg.deep_supervision:
            return main
        aux = [layers.to_channels_first(head(outputs[-2 - k])) for k, head in enumerate(self.aux_heads)]
        return [main, *aux]

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """``(data, seg)`` with the channel axis of ``seg`` dropped: ``(N, *spatial) int64``."""
        data, seg = super().split_batch(batch)
        if len(seg.shape) == self._config.spatial_dims + 2:
            seg = seg[:, 0]
        return data, tf.cast(seg, tf.int64)

    def compute_losses(
        self, predictions: Any, targets: Any, losses: Mapping[str, Callable[..., Any]]
    ) -> dict[str, Any]:
        """Each loss on the logits; with deep supervision, the weighted sum over the outputs
        (``deep_supervision_weights``) against targets subsampled with step
        ``config.cumulative_strides[k]`` per axis (``2**k`` by default)."""
        if not self._config.deep_supervision:
            return super().compute_losses(predictions, targets, losses)
        weights = deep_supervision_weights(len(predictions))
        steps = self._config.cumulative_strides
        values = {}
        for name, fn in losses.items():
            total = 0.0
            for k, (w, pred) in enumerate(zip(weights, predictions)):
                target = targets[(slice(None), *(slice(None, None, s) for s in steps[k]))]
                total = total + w * fn(target, pred)
            values[name] = total
        return values

    def main_output(self, predictions: Any) -> Any:
        """The full-resolution logits."""
        return predictions[0] if isinstance(predictions, (list, tuple)) else predictions
