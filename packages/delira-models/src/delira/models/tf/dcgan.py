"""DCGAN generator, discriminator and the alternating GAN step in Keras 3 (twin of ``delira.models.torch.dcgan``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from delira.models._constructors import (
    DCGANConstructor,
    DCGANDiscriminatorConstructor,
    DCGANGeneratorConstructor,
)
from delira.models._plans import LEAKY_SLOPE, DCGANDiscriminatorPlan, DCGANGeneratorPlan, DCGANPlan
from delira.models._steps import require_keys, select_optimizer
from delira.models.tf import layers
from delira.models.tf.network import AbstractNetwork

__all__ = ["DCGAN", "DCGANDiscriminator", "DCGANGenerator"]


def _conv_init() -> dict[str, Any]:
    """The paper's initialisation: weights ~ N(0, 0.02), biases 0."""
    return {"kernel_initializer": keras.initializers.RandomNormal(0.0, 0.02), "bias_initializer": "zeros"}


def _batch_norm(spatial_dims: int, channels: int) -> keras.layers.BatchNormalization:
    return layers.batch_norm(
        spatial_dims, channels, gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02)
    )


class DCGANGenerator(DCGANGeneratorConstructor, AbstractNetwork):
    """DCGAN generator: latent ``(N, latent_dim) float32`` -> image ``(N, out_channels, *[image_size] *
    spatial_dims) float32`` (channels first) in [-1, 1], as ``delira.models.torch.DCGANGenerator``.

    Args: as ``delira.models.configs.DCGANGeneratorConfig``: ``spatial_dims``, ``latent_dim``,
    ``out_channels``, ``image_size`` (4 * 2**k), ``base_features``.

    Default step: batch keys ``"latent"`` (input) and ``"data"`` (target images).
    """

    # __init__ (arguments, defaults, validation): DCGANGeneratorConstructor

    def _build_layers(self, plan: DCGANGeneratorPlan) -> None:
        dims = self._config.spatial_dims
        self.convs = [layers.ConvTranspose(dims, **c.arguments(), **_conv_init()) for c in plan.convs]
        self.norms = [_batch_norm(dims, c) for c in plan.norms]
        self.out = layers.ConvTranspose(dims, **plan.out.arguments(), **_conv_init())
        self.built = True  # every weight exists already

    def call(self, z: Any, training: bool | None = None) -> Any:
        """``(N, latent_dim) float32 -> (N, out_channels, *[image_size] * spatial_dims) float32``."""
        cfg = self._config
        self._check_latent(z.shape)
        x = ops.reshape(z, (-1,) + (1,) * cfg.spatial_dims + (cfg.latent_dim,))
        for conv, norm in zip(self.convs, self.norms):
            x = ops.relu(norm(conv(x), training=training))
        return layers.to_channels_first(ops.tanh(self.out(x)))


class DCGANDiscriminator(DCGANDiscriminatorConstructor, AbstractNetwork):
    """DCGAN discriminator: image ``(N, in_channels, *[image_size] * spatial_dims) float32`` (channels
    first) -> one logit per image ``(N,) float32``, as ``delira.models.torch.DCGANDiscriminator``.

    Args: as ``delira.models.configs.DCGANDiscriminatorConfig``: ``spatial_dims``,
    ``in_channels``, ``image_size`` (4 * 2**k, the only size it takes), ``base_features``.

    Default step: batch keys ``"data"`` and ``"label"`` (``(N,)``, 1 real, 0 fake).
    """

    # __init__ (arguments, defaults, validation): DCGANDiscriminatorConstructor

    def _build_layers(self, plan: DCGANDiscriminatorPlan) -> None:
        dims = self._config.spatial_dims
        self.convs = [layers.Conv(dims, **c.arguments(), **_conv_init()) for c in plan.convs]
        self.norms = [_batch_norm(dims, c) for c in plan.norms]
        self.out = layers.Conv(dims, **plan.out.arguments(), **_conv_init())
        self.built = True  # every weight exists already

    def call(self, x: Any, training: bool | None = None) -> Any:
        """``(N, C, *[image_size] * spatial_dims) float32 -> (N,) float32`` logits."""
        self._check_input(x.shape)
        x = layers.to_channels_last(x)
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if index > 0:
                x = self.norms[index - 1](x, training=training)
            x = ops.leaky_relu(x, LEAKY_SLOPE)
        return ops.reshape(self.out(x), (-1,))


class DCGAN(DCGANConstructor, AbstractNetwork):
    """A generator and a discriminator trained in alternation, as ``delira.models.torch.DCGAN``.

    Args: as ``delira.models.configs.DCGANConfig``: ``spatial_dims``, ``latent_dim``,
    ``channels``, ``image_size``, ``generator_features``, ``discriminator_features``.

    ``call(z)``: latent ``(N, latent_dim) float32`` -> images ``(N, channels, *spatial) float32``.
    ``training_step`` takes batch key ``"data"`` (real images), optimizers ``{"generator": ...,
    "discriminator": ...}`` and losses ``{"adversarial": loss(targets, logits)}``, e.g.
    ``keras.losses.BinaryCrossentropy(from_logits=True)``.
    """

    # __init__ (arguments, defaults, validation): DCGANConstructor

    def _build_layers(self, plan: DCGANPlan) -> None:
        self.generator = DCGANGenerator(**plan.generator.as_dict())
        self.discriminator = DCGANDiscriminator(**plan.discriminator.as_dict())
        self.built = True  # every weight exists already

    def call(self, z: Any, training: bool | None = None) -> Any:
        """Generate images: ``(N, latent_dim) -> (N, channels, *[image_size] * spatial_dims)``."""
        return self.generator(z, training=training)

    def optimizer_groups(self) -> dict[str, Any]:
        """Variables that get an optimizer each: ``{"generator": [...], "discriminator": [...]}``
        (the trainer builds one optimizer per group and passes them to :meth:`training_step` by name)."""
        return {
            "generator": list(self.generator.trainable_variables),
            "discriminator": list(self.discriminator.trainable_variables),
        }

    def sample_latent(self, n: int) -> Any:
        """``(n, latent_dim) float32`` standard normal latent vectors from Keras' global seed
        generator (seeded by ``keras.utils.set_random_seed``; its state is saved in checkpoints, so a
        resumed run draws the latents an uninterrupted one would, also inside a retraced step)."""
        return keras.random.normal((n, self._config.latent_dim))

    def training_step(
        self,
        batch: Mapping[str, Any],
        optimizers: Mapping[str, keras.optimizers.Optimizer],
        losses: Mapping[str, Callable[..., Any]],
    ) -> tuple[dict[str, float], Any]:
        """One discriminator step, then one generator step.

        Discriminator: minimise ``adv(1, D(real)) + adv(0, D(stop_gradient(G(z))))``; generator:
        minimise ``adv(1, D(G(z)))`` (the non-saturating loss) with the same ``z`` and the
        discriminator as updated by its step.

        Runs as a ``tf.function`` unless ``model.run_eagerly`` is True.

        Returns:
            ``({"discriminator": float, "generator": float}, fake images (N, C, *spatial))``.
        """
        d_opt = select_optimizer(optimizers, "DCGAN", "discriminator")
        g_opt = select_optimizer(optimizers, "DCGAN", "generator")
        require_keys(losses, ("adversarial",), "DCGAN losses")
        adversarial = losses["adversarial"]
        require_keys(batch, ("data",), "DCGAN")
        step = self._step_function(
            ("gan", id(d_opt), id(g_opt), id(adversarial)),
            lambda: self._gan_step(d_opt, g_opt, adversarial),
            [
                (d_opt, self.discriminator.trainable_variables),
                (g_opt, self.generator.trainable_variables),
            ],
        )
        d_loss, g_loss, fake = step(batch["data"])
        return {"discriminator": float(d_loss), "generator": float(g_loss)}, fake

    def _gan_step(
        self,
        d_opt: keras.optimizers.Optimizer,
        g_opt: keras.optimizers.Optimizer,
        adversarial: Callable[..., Any],
    ) -> Callable[[Any], tuple[Any, Any, Any]]:
        """The body of ``training_step`` for these optimizers and loss."""

        def step(real: Any) -> tuple[Any, Any, Any]:
            n = tf.shape(real)[0]
            z = self.sample_latent(n)
            ones, zeros = tf.ones((n,)), tf.zeros((n,))
            g_vars = self.generator.trainable_variables
            d_vars = self.discriminator.trainable_variables
            with tf.GradientTape() as g_tape:
                fake = self.generator(z, training=True)
                with g_tape.stop_recording():
                    with tf.GradientTape() as d_tape:
                        d_loss = adversarial(ones, self.discriminator(real, training=True)) + adversarial(
                            zeros, self.discriminator(tf.stop_gradient(fake), training=True)
                        )
                    d_opt.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
                g_loss = adversarial(ones, self.discriminator(fake, training=True))
            g_opt.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
            return d_loss, g_loss, fake

        return step
