"""DCGAN generator, discriminator and the alternating GAN step in PyTorch (Radford et al. 2016)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from delira.models._constructors import (
    DCGANConstructor,
    DCGANDiscriminatorConstructor,
    DCGANGeneratorConstructor,
)
from delira.models._plans import LEAKY_SLOPE, DCGANDiscriminatorPlan, DCGANGeneratorPlan, DCGANPlan
from delira.models._steps import require_keys, select_optimizer
from delira.models.torch import layers
from delira.models.torch.network import AbstractNetwork

__all__ = ["DCGAN", "DCGANDiscriminator", "DCGANGenerator", "init_dcgan_weights"]


def init_dcgan_weights(module: nn.Module) -> None:
    """The paper's initialisation: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(DCGANGeneratorConstructor, AbstractNetwork):
    """DCGAN generator: latent ``(N, latent_dim) float32`` -> image ``(N, out_channels, *[image_size] *
    spatial_dims) float32`` in [-1, 1].

    A 4x4 transposed conv maps the latent vector to 4 x 4; each next transposed conv (4x4, stride 2)
    doubles the size and halves the channels (BN, ReLU); the last one gives ``out_channels`` (tanh).

    Args: as ``delira.models.configs.DCGANGeneratorConfig``: ``spatial_dims``, ``latent_dim``,
    ``out_channels``, ``image_size`` (4 * 2**k), ``base_features``.

    Default step: batch keys ``"latent"`` (input) and ``"data"`` (target images), e.g. to fit a
    generator to images by regression; adversarial training uses ``DCGAN``.
    """

    # __init__ (arguments, defaults, validation): DCGANGeneratorConstructor

    def _build_layers(self, plan: DCGANGeneratorPlan) -> None:
        dims = self._config.spatial_dims
        self.convs = nn.ModuleList(layers.conv_transpose(dims, **c.arguments()) for c in plan.convs)
        self.norms = nn.ModuleList(layers.norm("batch", dims, c) for c in plan.norms)
        self.out = layers.conv_transpose(dims, **plan.out.arguments())
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, latent_dim) float32 -> (N, out_channels, *[image_size] * spatial_dims) float32``."""
        cfg = self._config
        self._check_latent(z.shape)
        x = z.reshape(z.shape[0], cfg.latent_dim, *([1] * cfg.spatial_dims))
        for conv, norm in zip(self.convs, self.norms):
            x = torch.relu(norm(conv(x)))
        return torch.tanh(self.out(x))


class DCGANDiscriminator(DCGANDiscriminatorConstructor, AbstractNetwork):
    """DCGAN discriminator: image ``(N, in_channels, *[image_size] * spatial_dims) float32`` -> one
    logit per image ``(N,) float32`` (no sigmoid).

    4x4 convs with stride 2 halve the size and double the channels (LeakyReLU 0.2; BN from the
    second on) down to 4 x 4; a last 4x4 conv gives the logit.

    Args: as ``delira.models.configs.DCGANDiscriminatorConfig``: ``spatial_dims``,
    ``in_channels``, ``image_size`` (4 * 2**k, the only size it takes), ``base_features``.

    Default step: batch keys ``"data"`` and ``"label"`` (``(N,)``, 1 real, 0 fake).
    """

    # __init__ (arguments, defaults, validation): DCGANDiscriminatorConstructor

    def _build_layers(self, plan: DCGANDiscriminatorPlan) -> None:
        dims = self._config.spatial_dims
        self.convs = nn.ModuleList(layers.conv(dims, **c.arguments()) for c in plan.convs)
        self.norms = nn.ModuleList(layers.norm("batch", dims, c) for c in plan.norms)
        self.out = layers.conv(dims, **plan.out.arguments())
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *[image_size] * spatial_dims) float32 -> (N,) float32`` logits."""
        self._check_input(x.shape)
        for index, conv in enumerate(self.convs):
            x = conv(x)
            if index > 0:
                x = self.norms[index - 1](x)
            x = nn.functional.leaky_relu(x, LEAKY_SLOPE)
        return self.out(x).reshape(x.shape[0])


class DCGAN(DCGANConstructor, AbstractNetwork):
    """A generator and a discriminator trained in alternation (the DCGAN recipe).

    Args: as ``delira.models.configs.DCGANConfig``: ``spatial_dims``, ``latent_dim``,
    ``channels``, ``image_size``, ``generator_features``, ``discriminator_features``.

    ``forward(z)``: latent ``(N, latent_dim) float32`` -> images ``(N, channels, *spatial) float32``.
    ``training_step`` takes batch key ``"data"`` (real images), optimizers ``{"generator": ...,
    "discriminator": ...}`` and losses ``{"adversarial": loss(logits, targets)}``, e.g.
    ``torch.nn.BCEWithLogitsLoss()``.
    """

    # __init__ (arguments, defaults, validation): DCGANConstructor

    def _build_layers(self, plan: DCGANPlan) -> None:
        self.generator = DCGANGenerator(**plan.generator.as_dict())
        self.discriminator = DCGANDiscriminator(**plan.discriminator.as_dict())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate images: ``(N, latent_dim) -> (N, channels, *[image_size] * spatial_dims)``."""
        return self.generator(z)

    def sample_latent(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``(n, latent_dim) float32`` standard normal latent vectors (torch's global RNG)."""
        return torch.randn(n, self._config.latent_dim, device=device)

    def optimizer_groups(self) -> dict[str, Any]:
        """Parameters that get an optimizer each: ``{"generator": ..., "discriminator": ...}``."""
        return {"generator": self.generator.parameters(), "discriminator": self.discriminator.parameters()}

    def training_step(
        self,
        batch: Mapping[str, Any],
        optimizers: Mapping[str, torch.optim.Optimizer],
        losses: Mapping[str, Callable[..., torch.Tensor]],
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One discriminator step, then one generator step.

        Discriminator: minimise ``adv(D(real), 1) + adv(D(G(z).detach()), 0)``; generator:
        minimise ``adv(D(G(z)), 1)`` (the non-saturating loss) with the same ``z``.

        Returns:
            ``({"discriminator": float, "generator": float}, fake images (N, C, *spatial))``.
        """
        d_opt = select_optimizer(optimizers, "DCGAN", "discriminator")
        g_opt = select_optimizer(optimizers, "DCGAN", "generator")
        require_keys(losses, ("adversarial",), "DCGAN losses")
        adversarial = losses["adversarial"]
        require_keys(batch, ("data",), "DCGAN")
        real = batch["data"]
        z = self.sample_latent(real.shape[0], real.device)
        ones = torch.ones(real.shape[0], device=real.device)
        zeros = torch.zeros_like(ones)

        fake = self.generator(z)
        d_opt.zero_grad(set_to_none=True)
        d_loss = adversarial(self.discriminator(real), ones) + adversarial(
            self.discriminator(fake.detach()), zeros
        )
        d_loss.backward()
        d_opt.step()

        g_opt.zero_grad(set_to_none=True)
        g_loss = adversarial(self.discriminator(fake), ones)
        g_loss.backward()
        g_opt.step()
        # the generator step leaves gradients on the discriminator; drop them so that they are
        # not mistaken for the discriminator's own
        self.discriminator.zero_grad(set_to_none=True)
        return {"discriminator": float(d_loss.detach()), "generator": float(g_loss.detach())}, fake.detach()
