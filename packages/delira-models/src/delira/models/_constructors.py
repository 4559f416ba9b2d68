"""The constructors the PyTorch and the Keras networks share: arguments, defaults, config, plan.

Each network of ``delira.models.torch`` and ``delira.models.tf`` derives first from one of the
classes here and then from its framework's ``AbstractNetwork``, e.g. ``class UNet(UNetConstructor,
AbstractNetwork)``. The shared ``__init__`` holds the public signature with its defaults, validates
the arguments into the config (``delira.models.configs``, before any layer exists), derives the layer
plan (``delira.models._plans``) and hands it to the framework's ``_build_layers(plan)``, which only
creates the layers. The batch keys, the input check and what the frameworks compute alike (UNet's
deep-supervision losses) live here too. Nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from delira.models import configs
from delira.models._plans import (
    dcgan_discriminator_plan,
    dcgan_generator_plan,
    dcgan_plan,
    resnet_plan,
    unet_plan,
)
from delira.models._steps import compute_zero_weight_outputs, deep_supervision_weights
from delira.models.input_size import InputSizeRule, check_input_shape

__all__ = [
    "DCGANConstructor",
    "DCGANDiscriminatorConstructor",
    "DCGANGeneratorConstructor",
    "NetworkConstructor",
    "ResNetConstructor",
    "UNetConstructor",
]


class NetworkConstructor:
    """What every network shares: its config, its plan, its input rule and the input check."""

    _config: Any
    _plan: Any
    _input_rule: InputSizeRule | None

    def _setup(self, config: Any, plan: Any) -> None:
        """Keep ``config`` (the ``config`` property) and ``plan``, then build the layers."""
        self._config = config
        self._plan = plan
        self._input_rule = config.input_rule() if hasattr(config, "input_rule") else None
        self._build_layers(plan)

    def _build_layers(self, plan: Any) -> None:
        """Create every layer of ``plan`` (each framework's network implements this)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _build_layers(plan)")

    def _check_input(self, shape: Sequence[Any]) -> None:
        """Raise ValueError unless ``shape`` is a channels-first batch the network takes (rank,
        channels and the spatial sizes of the input rule); None entries (unknown while tracing)
        pass."""
        cfg = self._config
        check_input_shape(
            tuple(shape),
            model=cfg.name,
            spatial_dims=cfg.spatial_dims,
            channels=cfg.in_channels,
            rule=self._input_rule,
        )


class ResNetConstructor(NetworkConstructor):
    """The constructor of ``ResNet``: arguments as ``ResNetConfig``, layers from ``resnet_plan``."""

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
        config = configs.ResNetConfig(depth, spatial_dims, in_channels, num_classes, width)
        self._setup(config, resnet_plan(config))


class UNetConstructor(NetworkConstructor):
    """The constructor of ``UNet``: arguments as ``UNetConfig``, layers from ``unet_plan``; the
    deep-supervision losses and the main output."""

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
        config = configs.UNetConfig(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=num_classes,
            features=features,  # type: ignore[arg-type]
            base_features=base_features,
            num_stages=num_stages,
            norm=norm,
            block=block,
            upsample=upsample,
            deep_supervision=deep_supervision,
            strides=strides,  # type: ignore[arg-type]
            kernel_sizes=kernel_sizes,  # type: ignore[arg-type]
        )
        self._setup(config, unet_plan(config))

    def compute_losses(self, predictions: Any, targets: Any, losses: Mapping[str, Callable[..., Any]]) -> Any:
        """Each loss on the logits (called in the framework's order); with deep supervision, the
        weighted sum over the outputs (nnU-Net's ``deep_supervision_weights``: the lowest resolution
        has weight 0 and is skipped) against targets subsampled
        with step ``config.cumulative_strides[k]`` per axis (``2**k`` by default)."""
        compute = super().compute_losses  # type: ignore[misc]
        if not self._config.deep_supervision:
            return compute(predictions, targets, losses)
        weights = deep_supervision_weights(len(predictions))
        steps = self._config.cumulative_strides
        keep = compute_zero_weight_outputs()  # under DDP every head must take part in the loss
        per_output = [  # outputs of weight 0 (nnU-Net's lowest resolution) are not computed
            compute(pred, targets[(slice(None), *(slice(None, None, s) for s in step))], losses)
            if w > 0 or keep
            else None
            for pred, step, w in zip(predictions, steps, weights)
        ]
        values = {}
        for name in losses:
            total = 0.0
            for w, output in zip(weights, per_output):
                if output is not None:
                    total = total + w * output[name]
            values[name] = total
        return values

    def main_output(self, predictions: Any) -> Any:
        """The full-resolution logits (the first output with deep supervision)."""
        return predictions[0] if isinstance(predictions, (list, tuple)) else predictions


class DCGANGeneratorConstructor(NetworkConstructor):
    """The constructor of ``DCGANGenerator``: arguments as ``DCGANGeneratorConfig``, layers from
    ``dcgan_generator_plan``; the latent check."""

    input_key = "latent"
    target_key = "data"

    def __init__(
        self,
        spatial_dims: int = 2,
        latent_dim: int = 100,
        out_channels: int = 1,
        image_size: int = 64,
        base_features: int = 64,
    ):
        super().__init__()
        config = configs.DCGANGeneratorConfig(
            spatial_dims, latent_dim, out_channels, image_size, base_features
        )
        self._setup(config, dcgan_generator_plan(config))

    def _check_latent(self, shape: Sequence[Any]) -> None:
        """Raise ValueError unless ``shape`` is ``(N, latent_dim)``."""
        cfg = self._config
        if len(shape) != 2 or shape[1] != cfg.latent_dim:
            raise ValueError(
                f"{cfg.name} takes latent vectors of shape (N, {cfg.latent_dim}); got shape {tuple(shape)}"
            )


class DCGANDiscriminatorConstructor(NetworkConstructor):
    """The constructor of ``DCGANDiscriminator``: arguments as ``DCGANDiscriminatorConfig``,
    layers from ``dcgan_discriminator_plan``."""

    target_key = "label"

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, image_size: int = 64, base_features: int = 64
    ):
        super().__init__()
        config = configs.DCGANDiscriminatorConfig(spatial_dims, in_channels, image_size, base_features)
        self._setup(config, dcgan_discriminator_plan(config))


class DCGANConstructor(NetworkConstructor):
    """The constructor of ``DCGAN``: arguments as ``DCGANConfig``; ``_build_layers`` gets the two
    sub-networks' configs (``dcgan_plan``)."""

    def __init__(
        self,
        spatial_dims: int = 2,
        latent_dim: int = 100,
        channels: int = 1,
        image_size: int = 64,
        generator_features: int = 64,
        discriminator_features: int = 64,
    ):
        super().__init__()
        config = configs.DCGANConfig(
            spatial_dims, latent_dim, channels, image_size, generator_features, discriminator_features
        )
        self._setup(config, dcgan_plan(config))
