"""Layer plans of the reference networks, decided once for PyTorch and Keras alike.

A plan turns a validated config (``delira.models.configs``) into the layers of the network: every
convolution's channels, kernel, stride, padding and bias, which residual blocks get a projection
shortcut, which encoder stages pool and by how much, how each decoder level upsamples, which levels
get a deep-supervision head. ``delira.models.torch`` and ``delira.models.tf`` build their layers
from these plans and decide none of it themselves, so the two implementations cannot drift apart;
``delira.models.memory`` counts activations and parameters from the same UNet plan.

A ``ConvSpec`` holds the arguments both frameworks' convolution factories take:
``layers.conv(spatial_dims, **spec.arguments())`` in PyTorch, ``layers.Conv(spatial_dims,
**spec.arguments())`` in Keras (likewise the transposed ones). Nothing here imports a framework.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Union

from delira.models import configs

__all__ = [
    "LEAKY_SLOPE",
    "ConvSpec",
    "DCGANDiscriminatorPlan",
    "DCGANGeneratorPlan",
    "DCGANPlan",
    "PoolSpec",
    "ResNetBlockPlan",
    "ResNetPlan",
    "Size",
    "UNetBlockPlan",
    "UNetPlan",
    "UNetUpPlan",
    "changes_size",
    "dcgan_discriminator_plan",
    "dcgan_generator_plan",
    "dcgan_plan",
    "per_axis",
    "resnet_plan",
    "same_padding",
    "unet_plan",
]

Size = Union[int, Sequence[int]]  # one int for every spatial axis, or one per axis

#: Negative slope of the DCGAN discriminator's LeakyReLU (Radford et al. 2016).
LEAKY_SLOPE = 0.2


def per_axis(value: Size, spatial_dims: int) -> tuple[int, ...]:
    """``value`` as one int per spatial axis: ``per_axis(3, 2) == (3, 3)``, ``per_axis((3, 1), 2)
    == (3, 1)``.

    Raises:
        ValueError: a sequence whose length is not ``spatial_dims``.
    """
    if isinstance(value, int):
        return (value,) * spatial_dims
    out = tuple(int(v) for v in value)
    if len(out) != spatial_dims:
        raise ValueError(
            f"got {len(out)} sizes {out} for {spatial_dims} spatial axes; pass one int per spatial "
            "axis or a single int for all of them"
        )
    return out


def same_padding(kernel_size: Size) -> int | tuple[int, ...]:
    """The padding that keeps the size of a stride-1 convolution with odd ``kernel_size``:
    ``kernel_size // 2`` (per axis for a sequence)."""
    if isinstance(kernel_size, int):
        return kernel_size // 2
    return tuple(int(k) // 2 for k in kernel_size)


def changes_size(factor: Size) -> bool:
    """Whether pooling or upsampling by ``factor`` changes the size on some axis (not all ones)."""
    return factor != 1 if isinstance(factor, int) else any(f != 1 for f in factor)


@dataclass(frozen=True)
class ConvSpec:
    """One convolution or transposed convolution, in the arguments of both frameworks' factories
    (``torch.nn.Conv{2,3}d`` semantics: integer ``padding`` on both sides).

    Attributes:
        in_channels, out_channels: channels of input and output.
        kernel_size, stride, padding: an int (every axis) or one int per spatial axis.
        bias: whether the layer adds a learned bias.
    """

    in_channels: int
    out_channels: int
    kernel_size: Size
    stride: Size = 1
    padding: Size = 0
    bias: bool = True

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``layers.conv`` / ``layers.Conv`` (and the transposed ones)
        after ``spatial_dims``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def parameters(self, spatial_dims: int) -> int:
        """Trainable parameters: ``in * out * prod(kernel)`` weights, plus ``out`` biases."""
        weights = self.in_channels * self.out_channels * math.prod(per_axis(self.kernel_size, spatial_dims))
        return weights + (self.out_channels if self.bias else 0)


@dataclass(frozen=True)
class PoolSpec:
    """One max-pooling (padding counts as -inf), in the arguments of both frameworks' ``max_pool``
    after its first one (``spatial_dims`` in PyTorch, the tensor in Keras)."""

    kernel_size: Size
    stride: Size
    padding: Size = 0

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``layers.max_pool``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------- ResNet


@dataclass(frozen=True)
class ResNetBlockPlan:
    """One residual block of a ResNet: ``convs``, each followed by batch norm (and ReLU, but for the
    last), plus a shortcut (a 1x1 conv-BN projection with ``stride`` when ``projects``) and a ReLU
    after the sum. ``(N, in_channels, *S) -> (N, out_channels, *ceil(S / stride))``.

    Basic blocks (``bottleneck=False``): two 3x3 convs, the first with ``stride``; bottleneck
    blocks: 1x1 (reduce to ``width``), 3x3 (``stride``), 1x1 (expand to ``4 * width``).
    """

    in_channels: int
    width: int
    stride: int
    bottleneck: bool

    @property
    def out_channels(self) -> int:
        """Channels of the block's output: ``4 * width`` for bottleneck blocks, else ``width``."""
        return 4 * self.width if self.bottleneck else self.width

    @property
    def convs(self) -> tuple[ConvSpec, ...]:
        """The convolutions of the main path, in order (all bias-free: batch norm follows)."""
        c_in, w, s = self.in_channels, self.width, self.stride
        if self.bottleneck:
            return (
                ConvSpec(c_in, w, 1, bias=False),
                ConvSpec(w, w, 3, stride=s, padding=1, bias=False),
                ConvSpec(w, self.out_channels, 1, bias=False),
            )
        return (
            ConvSpec(c_in, w, 3, stride=s, padding=1, bias=False),
            ConvSpec(w, w, 3, padding=1, bias=False),
        )

    @property
    def projects(self) -> bool:
        """Whether the shortcut is a projection (the shape changes), not the identity."""
        return self.stride != 1 or self.in_channels != self.out_channels


@dataclass(frozen=True)
class ResNetPlan:
    """The layers of a ResNet: stem conv + batch norm + ReLU, ``pool``, four ``stages`` of blocks,
    global average pooling, a linear layer ``in_features -> num_classes``."""

    stem: ConvSpec
    pool: PoolSpec
    stages: tuple[tuple[ResNetBlockPlan, ...], ...]
    in_features: int
    num_classes: int


def resnet_plan(config: configs.ResNetConfig) -> ResNetPlan:
    """The ResNet of ``config``: a 7x7 stem conv with stride 2 and padding 3, a 3x3 max-pool with
    stride 2 and padding 1, ``config.blocks_per_stage`` blocks per stage (stride 2 in the first
    block of stages 2-4, stride 1 elsewhere), ``config.out_features`` features into the linear
    layer."""
    stages = []
    channels = config.width
    for index, (width, count) in enumerate(zip(config.stage_widths, config.blocks_per_stage)):
        blocks = []
        for b in range(count):
            block = ResNetBlockPlan(channels, width, 2 if index > 0 and b == 0 else 1, config.bottleneck)
            blocks.append(block)
            channels = block.out_channels
        stages.append(tuple(blocks))
    return ResNetPlan(
        stem=ConvSpec(config.in_channels, config.width, 7, stride=2, padding=3, bias=False),
        pool=PoolSpec(3, stride=2, padding=1),
        stages=tuple(stages),
        in_features=config.out_features,
        num_classes=config.num_classes,
    )


# ------------------------------------------------------------------------------------------ UNet


@dataclass(frozen=True)
class UNetBlockPlan:
    """One UNet block: two bias-free convs with ``kernel_size`` and "same" padding, each followed
    by a norm (and a ReLU; a residual block adds the shortcut before the second ReLU, a 1x1
    conv-norm projection when ``projects``). ``(N, in_channels, *S) -> (N, out_channels, *S)``."""

    in_channels: int
    out_channels: int
    kernel_size: Size = 3

    @property
    def convs(self) -> tuple[ConvSpec, ConvSpec]:
        """The two convolutions, in order."""
        pad = same_padding(self.kernel_size)
        return (
            ConvSpec(self.in_channels, self.out_channels, self.kernel_size, padding=pad, bias=False),
            ConvSpec(self.out_channels, self.out_channels, self.kernel_size, padding=pad, bias=False),
        )

    @property
    def projects(self) -> bool:
        """Whether a residual block's shortcut is a projection (the channels change)."""
        return self.in_channels != self.out_channels


@dataclass(frozen=True)
class UNetUpPlan:
    """One upsampling of the UNet decoder by ``factor``:
    ``(N, in_channels, *S) -> (N, out_channels, *(S * factor))``.

    ``mode="transpose"``: a transposed conv with kernel = stride = ``factor``; ``"interpolate"``:
    linear upsampling by ``factor`` (when it changes the size) and a 1x1 conv.
    """

    in_channels: int
    out_channels: int
    factor: Size = 2
    mode: str = "transpose"

    @property
    def conv(self) -> ConvSpec:
        """The (transposed, for ``"transpose"``) convolution, with a bias."""
        if self.mode == "transpose":
            return ConvSpec(self.in_channels, self.out_channels, self.factor, stride=self.factor)
        return ConvSpec(self.in_channels, self.out_channels, 1)

    @property
    def interpolates(self) -> bool:
        """Whether the input is linearly upsampled before the conv (``"interpolate"`` with a factor
        that changes the size)."""
        return self.mode == "interpolate" and changes_size(self.factor)


@dataclass(frozen=True)
class UNetPlan:
    """The layers of a UNet.

    Encoder: ``encoder[i]`` is the block of stage ``i``, after max-pooling by ``pools[i - 1]``
    (kernel = stride; skipped where ``pools_into(i)`` is False). Decoder, deepest level first: for
    each level ``levels[j]``, ``up[j]`` upsamples the deeper output, the skip of that level is
    concatenated in front of it (``[skip, upsampled]``) and ``decoder[j]`` runs on the result.
    ``head`` gives the logits from the full-resolution decoder output; with deep supervision
    ``aux_heads[k]`` gives those of decoder level ``aux_levels[k]`` (1, 2, ..., num_stages - 2).
    """

    encoder: tuple[UNetBlockPlan, ...]
    pools: tuple[tuple[int, ...], ...]
    levels: tuple[int, ...]
    up: tuple[UNetUpPlan, ...]
    decoder: tuple[UNetBlockPlan, ...]
    head: ConvSpec
    aux_levels: tuple[int, ...]
    aux_heads: tuple[ConvSpec, ...]

    def pools_into(self, stage: int) -> bool:
        """Whether the encoder max-pools before ``stage`` (not for stage 0, nor for an all-ones
        stride)."""
        return stage > 0 and changes_size(self.pools[stage - 1])


def unet_plan(config: configs.UNetConfig) -> UNetPlan:
    """The UNet of ``config``: stage ``i`` has ``config.stage_features[i]`` channels and
    ``config.stage_kernel_sizes[i]`` kernels in its encoder and decoder block; the encoder pools
    into it by ``config.stage_strides[i]`` and the decoder upsamples out of it by the same factor;
    the heads are 1x1 convs to ``num_classes``."""
    feats, strides, kernels = config.stage_features, config.stage_strides, config.stage_kernel_sizes
    levels = tuple(range(len(feats) - 2, -1, -1))
    aux_levels = tuple(range(1, len(feats) - 1)) if config.deep_supervision else ()
    return UNetPlan(
        encoder=tuple(
            UNetBlockPlan(c_in, c_out, kernels[i])
            for i, (c_in, c_out) in enumerate(zip((config.in_channels, *feats[:-1]), feats))
        ),
        pools=tuple(strides[1:]),
        levels=levels,
        up=tuple(UNetUpPlan(feats[i + 1], feats[i], strides[i + 1], config.upsample) for i in levels),
        decoder=tuple(UNetBlockPlan(2 * feats[i], feats[i], kernels[i]) for i in levels),
        head=ConvSpec(feats[0], config.num_classes, 1),
        aux_levels=aux_levels,
        aux_heads=tuple(ConvSpec(feats[i], config.num_classes, 1) for i in aux_levels),
    )


# ----------------------------------------------------------------------------------------- DCGAN


@dataclass(frozen=True)
class DCGANGeneratorPlan:
    """The layers of a DCGAN generator: transposed ``convs``, each followed by batch norm over
    ``norms[i]`` channels and a ReLU, then ``out`` (with a bias) and tanh. The first conv maps the
    latent vector, seen as ``(N, latent_dim, 1, ..., 1)``, to 4 x 4; each next one doubles the size."""

    convs: tuple[ConvSpec, ...]
    norms: tuple[int, ...]
    out: ConvSpec


def dcgan_generator_plan(config: configs.DCGANGeneratorConfig) -> DCGANGeneratorPlan:
    """The generator of ``config``: a 4x4 transposed conv (stride 1, no padding) from
    ``latent_dim`` to ``hidden_features[0]``, 4x4 transposed convs with stride 2 and padding 1
    through ``hidden_features``, and the same to ``out_channels``."""
    hidden = config.hidden_features
    first = ConvSpec(config.latent_dim, hidden[0], 4, stride=1, padding=0, bias=False)
    rest = tuple(
        ConvSpec(c_in, c_out, 4, stride=2, padding=1, bias=False)
        for c_in, c_out in zip(hidden[:-1], hidden[1:])
    )
    return DCGANGeneratorPlan(
        convs=(first, *rest),
        norms=hidden,
        out=ConvSpec(hidden[-1], config.out_channels, 4, stride=2, padding=1),
    )


@dataclass(frozen=True)
class DCGANDiscriminatorPlan:
    """The layers of a DCGAN discriminator: ``convs``, each followed by a LeakyReLU
    (``LEAKY_SLOPE``), from the second on with batch norm over ``norms[i - 1]`` channels before
    it; then ``out`` (with a bias) gives one logit per image."""

    convs: tuple[ConvSpec, ...]
    norms: tuple[int, ...]
    out: ConvSpec


def dcgan_discriminator_plan(config: configs.DCGANDiscriminatorConfig) -> DCGANDiscriminatorPlan:
    """The discriminator of ``config``: bias-free 4x4 convs with stride 2 and padding 1 from
    ``in_channels`` through ``hidden_features`` (image_size / 2 down to 4 x 4), then a 4x4 conv to
    one channel."""
    hidden = config.hidden_features
    return DCGANDiscriminatorPlan(
        convs=tuple(
            ConvSpec(c_in, c_out, 4, stride=2, padding=1, bias=False)
            for c_in, c_out in zip((config.in_channels, *hidden[:-1]), hidden)
        ),
        norms=hidden[1:],
        out=ConvSpec(hidden[-1], 1, 4),
    )


@dataclass(frozen=True)
class DCGANPlan:
    """The two networks of a DCGAN, by their configs."""

    generator: configs.DCGANGeneratorConfig
    discriminator: configs.DCGANDiscriminatorConfig


def dcgan_plan(config: configs.DCGANConfig) -> DCGANPlan:
    """The generator's and the discriminator's config of ``config``."""
    return DCGANPlan(generator=config.generator, discriminator=config.discriminator)
