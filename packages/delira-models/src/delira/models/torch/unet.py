"""UNet for 2D and 3D segmentation in PyTorch (Ronneberger et al. 2015; Çiçek et al. 2016 in 3D)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from delira.models._steps import deep_supervision_weights
from delira.models.configs import UNetConfig
from delira.models.input_size import check_input_shape
from delira.models.torch import layers
from delira.models.torch.network import AbstractNetwork

__all__ = ["PlainBlock", "ResidualBlock", "UNet", "UpConv"]


class PlainBlock(nn.Module):
    """Two (3x3 conv, norm, ReLU) layers: ``(N, in_channels, *S) -> (N, out_channels, *S)``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv1 = layers.conv(spatial_dims, in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.conv(spatial_dims, out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(x)))


class ResidualBlock(nn.Module):
    """3x3 conv-norm-ReLU, 3x3 conv-norm, plus a shortcut (1x1 conv-norm if channels change), ReLU:
    ``(N, in_channels, *S) -> (N, out_channels, *S)``."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv1 = layers.conv(spatial_dims, in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = layers.norm(norm, spatial_dims, out_channels)
        self.conv2 = layers.conv(spatial_dims, out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = layers.norm(norm, spatial_dims, out_channels)
        self.shortcut = (
            layers.Projection(spatial_dims, in_channels, out_channels, 1, norm)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + skip)


class UpConv(nn.Module):
    """Double the spatial size: ``(N, in_channels, *S) -> (N, out_channels, *2S)``.

    ``"transpose"``: a 2x2 transposed conv with stride 2; ``"interpolate"``: linear x2 upsampling
    (align_corners=False) then a 1x1 conv.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, mode: str):
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.conv = layers.conv_transpose(spatial_dims, in_channels, out_channels, 2, stride=2)
        else:
            self.conv = layers.conv(spatial_dims, in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``."""
        if self.mode == "interpolate":
            x = layers.upsample_linear(x)
        return self.conv(x)


class UNet(AbstractNetwork):
    """UNet, 2D or 3D, with plain or residual blocks, instance or batch norm.

    Encoder: a block per stage, 2x2 max-pooling between stages. Decoder: per stage, upsampling,
    concatenation ``[skip, upsampled]`` along channels, a block. A 1x1 conv gives the logits.

    Args: as ``delira.models.configs.UNetConfig``: ``spatial_dims``, ``in_channels``,
    ``num_classes``, ``features`` or ``base_features`` + ``num_stages``, ``norm``
    (``"instance"``/``"batch"``), ``block`` (``"plain"``/``"residual"``), ``upsample``
    (``"transpose"``/``"interpolate"``), ``deep_supervision``.

    Input ``(N, C, *spatial) float32``, sizes divisible by ``2**(num_stages - 1)``. Output logits
    ``(N, num_classes, *spatial) float32``; with ``deep_supervision`` a list of ``num_stages - 1``
    of them, full resolution first, each next one half the size. Batch key ``"seg"``:
    ``(N, 1, *spatial) int`` labels.
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
        )
        self._config = cfg
        self._input_rule = cfg.input_rule()
        feats = cfg.stage_features
        block_cls = ResidualBlock if block == "residual" else PlainBlock
        self.pool = layers.max_pool(spatial_dims, 2, stride=2)
        self.encoder = nn.ModuleList(
            block_cls(spatial_dims, c_in, c_out, norm)
            for c_in, c_out in zip((in_channels, *feats[:-1]), feats)
        )
        levels = range(len(feats) - 2, -1, -1)  # decoder levels, deepest first
        self.up = nn.ModuleList(UpConv(spatial_dims, feats[i + 1], feats[i], upsample) for i in levels)
        self.decoder = nn.ModuleList(block_cls(spatial_dims, 2 * feats[i], feats[i], norm) for i in levels)
        self.head = layers.conv(spatial_dims, feats[0], num_classes, 1)
        # deep supervision: heads on the decoder outputs at levels 1, 2, ..., num_stages - 2
        self.aux_heads = nn.ModuleList(
            layers.conv(spatial_dims, feats[i], num_classes, 1)
            for i in (range(1, len(feats) - 1) if cfg.deep_supervision else ())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """``(N, C, *S) float32 -> (N, num_classes, *S) float32`` logits (a list with deep supervision)."""
        cfg = self._config
        check_input_shape(
            tuple(x.shape),
            model=cfg.name,
            spatial_dims=cfg.spatial_dims,
            channels=cfg.in_channels,
            rule=self._input_rule,
        )
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
            outputs.append(x)
        main = self.head(outputs[-1])
        if not cfg.deep_supervision:
            return main
        # outputs[-2 - k] is the decoder output at level k + 1 (half the size per level)
        return [main, *(head(outputs[-2 - k]) for k, head in enumerate(self.aux_heads))]

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(data, seg)`` with the channel axis of ``seg`` dropped: ``(N, *spatial) int64``."""
        data, seg = super().split_batch(batch)
        if seg.dim() == self._config.spatial_dims + 2:
            seg = seg[:, 0]
        return data, seg.long()

    def compute_losses(
        self, predictions: Any, targets: torch.Tensor, losses: Mapping[str, Callable[..., torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Each loss on the logits; with deep supervision, the weighted sum over the outputs
        (``deep_supervision_weights``) against targets subsampled with stride ``2**k``."""
        if not self._config.deep_supervision:
            return super().compute_losses(predictions, targets, losses)
        weights = deep_supervision_weights(len(predictions))
        values = {}
        for name, fn in losses.items():
            total = 0.0
            for k, (w, pred) in enumerate(zip(weights, predictions)):
                step = 2**k
                target = targets[(slice(None),) + (slice(None, None, step),) * self._config.spatial_dims]
                total = total + w * fn(pred, target)
            values[name] = total
        return values

    def main_output(self, predictions: Any) -> torch.Tensor:
        """The full-resolution logits."""
        return predictions[0] if isinstance(predictions, list) else predictions
