"""The reference networks in PyTorch (imports torch).

Same class names and constructor arguments as ``delira.models.tf``; channels-first input
``(N, C, *spatial) float32``; every network is an ``AbstractNetwork`` (a ``torch.nn.Module``).
"""

from __future__ import annotations

from delira.models.torch.dcgan import DCGAN, DCGANDiscriminator, DCGANGenerator
from delira.models.torch.network import AbstractNetwork
from delira.models.torch.resnet import ResNet, resnet18, resnet34, resnet50
from delira.models.torch.unet import UNet

__all__ = [
    "DCGAN",
    "AbstractNetwork",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ResNet",
    "UNet",
    "resnet18",
    "resnet34",
    "resnet50",
]
