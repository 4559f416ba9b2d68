"""Validated constructor arguments of the reference networks, shared by both frameworks.

The PyTorch and the TensorFlow model of the same name take the same arguments because both build
themselves from the same config; an invalid argument gives the same error in both, before either
framework allocates anything. Nothing here imports torch or tensorflow.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from delira.models.input_size import InputSizeRule

__all__ = [
    "DCGANConfig",
    "DCGANDiscriminatorConfig",
    "DCGANGeneratorConfig",
    "ResNetConfig",
    "UNetConfig",
]

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int; got {value!r}")
    return value


def _spatial_dims(owner: str, value: Any) -> int:
    if not _is_int(value) or value not in (2, 3):
        raise ValueError(
            f"{owner}: spatial_dims must be 2 (images, (N, C, H, W)) or 3 (volumes, (N, C, D, H, W)); "
            f"got {value!r}"
        )
    return int(value)


def _choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise ValueError(f"{owner}: {name} must be {options}; got {value!r}")
    return str(value)


class _Config:
    """Shared helpers of the config dataclasses."""

    def as_dict(self) -> dict[str, Any]:
        """The constructor arguments as a plain dict (JSON- and YAML-serialisable: tuples, also
        nested ones such as ``UNetConfig.strides``, become lists)."""
        out = asdict(self)  # type: ignore[call-overload]
        return {k: _as_lists(v) for k, v in out.items()}


def _as_lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_as_lists(v) for v in value]
    return value


def _is_int(value: Any) -> bool:
    """An int (numpy integers included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _per_stage(
    owner: str, name: str, value: Any, stages: int, spatial_dims: int, source: str
) -> tuple[tuple[int, ...], ...]:
    """``value`` (one entry per stage, each an int or one int per spatial axis) as a tuple of
    ``stages`` tuples of ``spatial_dims`` ints; the entries themselves are checked by the caller."""
    example = "((1, 1, 1), (2, 2, 1), (2, 2, 2))" if spatial_dims == 3 else "((1, 1), (2, 2), (2, 1))"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"{owner}: {name} must be a list with one entry per stage, each an int or one int per "
            f"spatial axis, e.g. {example}; got {value!r}"
        )
    if len(value) != stages:
        raise ValueError(
            f"{owner}: {name} has {len(value)} entries but the UNet has {stages} stages ({source}); "
            f"pass one entry per stage, shallowest first"
        )
    resolved = []
    for stage, entry in enumerate(value):
        if _is_int(entry):
            resolved.append((int(entry),) * spatial_dims)
            continue
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence):
            raise ValueError(
                f"{owner}: {name}[{stage}] must be an int or a list of {spatial_dims} ints (one per "
                f"spatial axis); got {entry!r}"
            )
        if len(entry) != spatial_dims:
            raise ValueError(
                f"{owner}: {name}[{stage}] has {len(entry)} entries {tuple(entry)} but spatial_dims="
                f"{spatial_dims}; pass one int per spatial axis (or a single int for all of them)"
            )
        if not all(_is_int(v) for v in entry):
            raise ValueError(f"{owner}: {name}[{stage}] must hold ints; got {tuple(entry)!r}")
        resolved.append(tuple(int(v) for v in entry))
    return tuple(resolved)


@dataclass(frozen=True)
class ResNetConfig(_Config):
    """Arguments of ``ResNet``: a He et al. (2016) residual network for classification.

    Input ``(N, in_channels, *spatial) float32``, output logits ``(N, num_classes) float32``.

    Attributes:
        depth: 18 or 34 (basic blocks) or 50 (bottleneck blocks, 4x expansion).
        spatial_dims: 2 or 3.
        in_channels: channels of the input image.
        num_classes: number of output logits.
        width: channels after the stem; the four stages have width, 2, 4 and 8 times width
            (times 4 at the output of bottleneck blocks). 64 is the published network.
    """

    depth: int = 18
    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    width: int = 64

    def __post_init__(self) -> None:
        if not _is_int(self.depth) or self.depth not in RESNET_BLOCKS:
            raise ValueError(f"ResNet: depth must be 18, 34 or 50; got {self.depth!r}")
        _spatial_dims("ResNet", self.spatial_dims)
        _positive_int("ResNet", "in_channels", self.in_channels)
        _positive_int("ResNet", "num_classes", self.num_classes)
        _positive_int("ResNet", "width", self.width)

    @property
    def name(self) -> str:
        """E.g. ``"ResNet-18 (2D)"``."""
        return f"ResNet-{self.depth} ({self.spatial_dims}D)"

    @property
    def bottleneck(self) -> bool:
        """True for bottleneck blocks (depth 50), False for basic blocks."""
        return self.depth == 50

    @property
    def expansion(self) -> int:
        """Output channels of a block per stage width: 4 for bottleneck blocks, else 1."""
        return 4 if self.bottleneck else 1

    @property
    def blocks_per_stage(self) -> tuple[int, int, int, int]:
        """Residual blocks in each of the four stages."""
        return RESNET_BLOCKS[self.depth]  # type: ignore[return-value]

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Inner width of each stage: width * (1, 2, 4, 8)."""
        return tuple(self.width * 2**i for i in range(4))

    @property
    def out_features(self) -> int:
        """Channels entering the final linear layer."""
        return self.stage_widths[-1] * self.expansion

    def input_rule(self) -> InputSizeRule:
        """Any spatial size >= 1: each stride-2 step rounds up, global pooling ends the network."""
        return InputSizeRule(model=self.name, multiple=1, minimum=1)


@dataclass(frozen=True)
class UNetConfig(_Config):
    """Arguments of ``UNet``: a Ronneberger et al. (2015) encoder-decoder for segmentation.

    Input ``(N, in_channels, *spatial) float32``; output logits ``(N, num_classes, *spatial) float32``,
    or with ``deep_supervision`` a list of ``num_stages - 1`` logit maps, the first at full
    resolution and the one of decoder level ``k`` at ``spatial // cumulative_strides[k]`` (half
    the size of the one before with the default strides).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: channels of the input image.
        num_classes: channels of the output logits (background included).
        features: channels of each stage, shallowest first, e.g. (32, 64, 128, 256); if left out,
            ``base_features * 2**i`` for ``num_stages`` stages. After construction all three hold
            the resolved values (``features[0]``, ``len(features)``), so equal networks have
            equal configs.
        base_features: channels of the first stage when ``features`` is left out (default 32).
        num_stages: number of resolution levels, >= 2 (default 4; or the length of ``strides``
            or ``kernel_sizes`` when neither ``features`` nor ``num_stages`` is given).
        norm: ``"instance"`` (affine instance norm) or ``"batch"``.
        block: ``"plain"`` (two conv-norm-ReLU) or ``"residual"`` (with a shortcut).
        upsample: ``"transpose"`` (2x2 transposed conv, stride 2) or ``"interpolate"``
            ((bi/tri)linear x2 upsampling, align_corners=False, then a 1x1 conv).
        deep_supervision: also return logits of the lower decoder stages (needs num_stages >= 3).
        strides: one entry per stage, each an int (all axes) or one int per spatial axis. Stage 0's
            entry must be all ones; stage ``i > 0``'s is the max-pooling factor from stage ``i - 1``
            to stage ``i`` (kernel = stride), and the decoder upsamples by the same factor. A factor
            of 1 on an axis leaves it unpooled (e.g. ``(2, 2, 1)`` keeps a coarse last axis), all
            ones gives a stage with more features and no pooling. Spatial sizes must be divisible,
            per axis, by the product of the strides along it. Default (None): 2 on every axis of
            every stage after the first.
        kernel_sizes: one entry per stage, each an odd int (all axes) or one odd int per spatial
            axis, e.g. ``(3, 3, 1)`` for a stage whose last axis is still coarse; the convolutions
            of the encoder block and of the decoder block of that stage use it with "same"
            padding (``kernel // 2`` per axis). Default (None): 3 everywhere.

    After construction ``strides`` and ``kernel_sizes`` hold the resolved tuples of tuples (lists
    from YAML are accepted), so the default network has the same config either way.
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    features: tuple[int, ...] | None = None
    base_features: int | None = None
    num_stages: int | None = None
    norm: str = "instance"
    block: str = "plain"
    upsample: str = "transpose"
    deep_supervision: bool = False
    strides: tuple[tuple[int, ...], ...] | None = None
    kernel_sizes: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        owner = "UNet"
        _spatial_dims(owner, self.spatial_dims)
        _positive_int(owner, "in_channels", self.in_channels)
        _positive_int(owner, "num_classes", self.num_classes)
        _choice(owner, "norm", self.norm, ("instance", "batch"))
        _choice(owner, "block", self.block, ("plain", "residual"))
        _choice(owner, "upsample", self.upsample, ("transpose", "interpolate"))
        if not isinstance(self.deep_supervision, bool):
            raise ValueError(
                f"{owner}: deep_supervision must be True or False; got {self.deep_supervision!r}"
            )
        if self.features is not None:
            try:
                features = tuple(self.features)
            except TypeError:
                raise ValueError(
                    f"{owner}: features must be a list of positive ints, one per stage, shallowest "
                    f"first, e.g. (32, 64, 128, 256); got {self.features!r}; for one int use "
                    "base_features (and num_stages) instead"
                ) from None
            for f in features:
                _positive_int(owner, "every entry of features", f)
            if self.base_features is not None and features and self.base_features != features[0]:
                raise ValueError(
                    f"{owner}: base_features={self.base_features} contradicts features={features}; "
                    "pass features or base_features, not both"
                )
            if self.num_stages is not None and self.num_stages != len(features):
                raise ValueError(
                    f"{owner}: num_stages={self.num_stages} but features has {len(features)} entries "
                    f"{features}; pass features or num_stages, not both"
                )
        else:
            base = _positive_int(
                owner, "base_features", 32 if self.base_features is None else self.base_features
            )
            stages = self.num_stages
            if stages is None:
                given = [v for v in (self.strides, self.kernel_sizes) if isinstance(v, Sequence)]
                stages = len(given[0]) if given else 4
            stages = _positive_int(owner, "num_stages", stages)
            features = tuple(base * 2**i for i in range(stages))
        if len(features) < 2:
            raise ValueError(
                f"{owner}: needs at least 2 stages (one pooling and one upsampling); got "
                f"num_stages={len(features)} (features={features}); pass num_stages >= 2"
            )
        if self.deep_supervision and len(features) < 3:
            raise ValueError(
                f"{owner}: deep_supervision needs at least 3 stages (it adds outputs below full resolution); "
                f"got {len(features)}; add a stage or set deep_supervision=False"
            )
        strides, kernel_sizes = self._topology(owner, features)
        # store the resolved values, so that equal networks have equal configs
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "kernel_sizes", kernel_sizes)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "base_features", features[0])
        object.__setattr__(self, "num_stages", len(features))
        object.__setattr__(self, "deep_supervision", bool(self.deep_supervision))

    def _topology(
        self, owner: str, features: tuple[int, ...]
    ) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
        """Resolve and check ``strides`` and ``kernel_sizes`` for ``len(features)`` stages."""
        dims, stages = self.spatial_dims, len(features)
        source = f"features={features}"
        if self.strides is None:
            strides = ((1,) * dims,) + ((2,) * dims,) * (stages - 1)
        else:
            strides = _per_stage(owner, "strides", self.strides, stages, dims, source)
            for stage, entry in enumerate(strides):
                if any(v < 1 for v in entry):
                    raise ValueError(
                        f"{owner}: strides[{stage}]={entry} must hold positive ints (1: no pooling "
                        "on that axis, 2: halve it)"
                    )
            if any(v != 1 for v in strides[0]):
                raise ValueError(
                    f"{owner}: strides[0]={strides[0]} must be all ones {(1,) * dims}: the first stage "
                    "runs at the input resolution; the first pooling is strides[1]"
                )
        if self.kernel_sizes is None:
            kernel_sizes = ((3,) * dims,) * stages
        else:
            kernel_sizes = _per_stage(owner, "kernel_sizes", self.kernel_sizes, stages, dims, source)
            for stage, entry in enumerate(kernel_sizes):
                if any(v < 1 or v % 2 == 0 for v in entry):
                    raise ValueError(
                        f"{owner}: kernel_sizes[{stage}]={entry} must hold odd positive ints (1, 3, 5, "
                        "...): 'same' padding of kernel // 2 per axis keeps the size only for odd kernels"
                    )
        return strides, kernel_sizes

    @property
    def stage_features(self) -> tuple[int, ...]:
        """Channels of each stage, shallowest first (``features`` resolved)."""
        return self.features  # type: ignore[return-value]

    @property
    def stage_strides(self) -> tuple[tuple[int, ...], ...]:
        """Per stage, the pooling factor per spatial axis (``strides`` resolved; stage 0 all ones)."""
        return self.strides  # type: ignore[return-value]

    @property
    def stage_kernel_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Per stage, the convolution kernel size per spatial axis (``kernel_sizes`` resolved)."""
        return self.kernel_sizes  # type: ignore[return-value]

    @property
    def cumulative_strides(self) -> tuple[tuple[int, ...], ...]:
        """Per stage, how much smaller than the input its feature maps are along each spatial
        axis: the product of the strides of stages ``0..i`` (stage 0: all ones)."""
        out, current = [], (1,) * self.spatial_dims
        for entry in self.stage_strides:
            current = tuple(c * s for c, s in zip(current, entry))
            out.append(current)
        return tuple(out)

    @property
    def size_divisors(self) -> tuple[int, ...]:
        """What every spatial size must be divisible by, per axis: the product of the strides
        along it (``cumulative_strides[-1]``)."""
        return self.cumulative_strides[-1]

    @property
    def depth(self) -> int:
        """Number of stages (resolution levels)."""
        return len(self.stage_features)

    @property
    def name(self) -> str:
        """E.g. ``"UNet with 4 stages"``."""
        return f"UNet with {self.depth} stages"

    def input_rule(self) -> InputSizeRule:
        """Sizes divisible, per axis, by the product of the strides along it (``size_divisors``;
        ``2**(num_stages - 1)`` on every axis with the default strides). The rule holds one int
        when every axis has the same divisor, else one per spatial axis."""
        divisors = self.size_divisors
        factor: int | tuple[int, ...] = divisors[0] if len(set(divisors)) == 1 else divisors
        hint = "crop or pad the input to one of them, or build the UNet with fewer stages"
        if isinstance(factor, tuple):
            hint += " or fewer poolings (stride 1) on that axis"
        return InputSizeRule(model=self.name, multiple=factor, minimum=factor, hint=hint)


def _image_size(owner: str, size: Any) -> int:
    _positive_int(owner, "image_size", size)
    if size < 8 or size & (size - 1):
        valid = [4 * 2**k for k in range(1, 12)]
        nearest = sorted(valid, key=lambda v: (abs(v - size), v))[:2]
        raise ValueError(
            f"{owner}: image_size must be 4 * 2**k with k >= 1 (8, 16, 32, 64, ...) because every "
            f"layer halves or doubles the size down to 4 x 4; got {size}; nearest valid sizes are "
            f"{' and '.join(str(n) for n in sorted(nearest))}"
        )
    return size


def _dcgan_stages(image_size: int) -> int:
    return int(math.log2(image_size // 4))


@dataclass(frozen=True)
class DCGANGeneratorConfig(_Config):
    """Arguments of ``DCGANGenerator`` (Radford et al. 2016).

    Input latent vectors ``(N, latent_dim) float32``; output images
    ``(N, out_channels, *[image_size] * spatial_dims) float32`` in [-1, 1] (tanh).

    Attributes:
        spatial_dims: 2 or 3.
        latent_dim: length of the latent vector.
        out_channels: channels of the generated image.
        image_size: side length of the generated image: 4 * 2**k, k >= 1.
        base_features: channels of the last hidden layer; each earlier layer has twice as many.
    """

    spatial_dims: int = 2
    latent_dim: int = 100
    out_channels: int = 1
    image_size: int = 64
    base_features: int = 64

    def __post_init__(self) -> None:
        owner = "DCGANGenerator"
        _spatial_dims(owner, self.spatial_dims)
        _positive_int(owner, "latent_dim", self.latent_dim)
        _positive_int(owner, "out_channels", self.out_channels)
        _image_size(owner, self.image_size)
        _positive_int(owner, "base_features", self.base_features)

    @property
    def name(self) -> str:
        """E.g. ``"DCGANGenerator (2D, 64)"``."""
        return f"DCGANGenerator ({self.spatial_dims}D, {self.image_size})"

    @property
    def hidden_features(self) -> tuple[int, ...]:
        """Channels of the hidden layers at sizes 4, 8, ..., image_size / 2."""
        stages = _dcgan_stages(self.image_size)
        return tuple(self.base_features * 2 ** (stages - 1 - i) for i in range(stages))


@dataclass(frozen=True)
class DCGANDiscriminatorConfig(_Config):
    """Arguments of ``DCGANDiscriminator`` (Radford et al. 2016).

    Input images ``(N, in_channels, *[image_size] * spatial_dims) float32``; output one logit per
    image ``(N,) float32`` (real > 0 > fake; no sigmoid, use a loss on logits).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: channels of the image.
        image_size: side length of the image: 4 * 2**k, k >= 1; the only size it takes.
        base_features: channels of the first layer; each next layer has twice as many.
    """

    spatial_dims: int = 2
    in_channels: int = 1
    image_size: int = 64
    base_features: int = 64

    def __post_init__(self) -> None:
        owner = "DCGANDiscriminator"
        _spatial_dims(owner, self.spatial_dims)
        _positive_int(owner, "in_channels", self.in_channels)
        _image_size(owner, self.image_size)
        _positive_int(owner, "base_features", self.base_features)

    @property
    def name(self) -> str:
        """E.g. ``"DCGANDiscriminator (2D, 64)"``."""
        return f"DCGANDiscriminator ({self.spatial_dims}D, {self.image_size})"

    @property
    def hidden_features(self) -> tuple[int, ...]:
        """Channels of the hidden layers at sizes image_size / 2, ..., 4."""
        stages = _dcgan_stages(self.image_size)
        return tuple(self.base_features * 2**i for i in range(stages))

    def input_rule(self) -> InputSizeRule:
        """Exactly ``image_size`` on every axis."""
        return InputSizeRule(
            model=self.name,
            exact=self.image_size,
            hint=f"resize the images to {self.image_size} or build it with image_size=<your size>",
        )


@dataclass(frozen=True)
class DCGANConfig(_Config):
    """Arguments of ``DCGAN``: a generator and a discriminator trained in alternation.

    Attributes:
        spatial_dims: 2 or 3.
        latent_dim: length of the generator's latent vector.
        channels: channels of the images.
        image_size: side length of the images: 4 * 2**k, k >= 1.
        generator_features: ``base_features`` of the generator.
        discriminator_features: ``base_features`` of the discriminator.
    """

    spatial_dims: int = 2
    latent_dim: int = 100
    channels: int = 1
    image_size: int = 64
    generator_features: int = 64
    discriminator_features: int = 64

    def __post_init__(self) -> None:
        # DCGAN's own argument names first, so that an error names the argument that was passed
        owner = "DCGAN"
        _spatial_dims(owner, self.spatial_dims)
        _positive_int(owner, "latent_dim", self.latent_dim)
        _positive_int(owner, "channels", self.channels)
        _image_size(owner, self.image_size)
        _positive_int(owner, "generator_features", self.generator_features)
        _positive_int(owner, "discriminator_features", self.discriminator_features)
        self.generator  # noqa: B018  (validates)
        self.discriminator  # noqa: B018

    @property
    def name(self) -> str:
        """E.g. ``"DCGAN (2D, 64)"``."""
        return f"DCGAN ({self.spatial_dims}D, {self.image_size})"

    @property
    def generator(self) -> DCGANGeneratorConfig:
        """The generator's config."""
        return DCGANGeneratorConfig(
            spatial_dims=self.spatial_dims,
            latent_dim=self.latent_dim,
            out_channels=self.channels,
            image_size=self.image_size,
            base_features=self.generator_features,
        )

    @property
    def discriminator(self) -> DCGANDiscriminatorConfig:
        """The discriminator's config."""
        return DCGANDiscriminatorConfig(
            spatial_dims=self.spatial_dims,
            in_channels=self.channels,
            image_size=self.image_size,
            base_features=self.discriminator_features,
        )

    def input_rule(self) -> InputSizeRule:
        """The images' rule: exactly ``image_size`` on every axis."""
        return self.discriminator.input_rule()
