"""The reference networks in Keras 3 on TensorFlow (imports tensorflow and keras).

Same class names and constructor arguments as ``delira.models.torch``; channels-first input
``(N, C, *spatial) float32`` (the layers run channels last inside); every network is an
``AbstractNetwork`` (a ``keras.Model``) whose weights exist from construction on.
"""

from __future__ import annotations

from delira.models.tf.network import check_backend

check_backend()

from delira.models.tf.dcgan import DCGAN, DCGANDiscriminator, DCGANGenerator  # noqa: E402
from delira.models.tf.losses import channels_first  # noqa: E402
from delira.models.tf.network import AbstractNetwork  # noqa: E402
from delira.models.tf.resnet import ResNet, resnet18, resnet34, resnet50  # noqa: E402
from delira.models.tf.unet import UNet  # noqa: E402

__all__ = [
    "DCGAN",
    "AbstractNetwork",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ResNet",
    "UNet",
    "channels_first",
    "resnet18",
    "resnet34",
    "resnet50",
]
