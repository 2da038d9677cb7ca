"""`resnet50`: torchvision's ResNet-50 trunk for images, MIE's image encoder on Twitter2015 and Sarcasm (Jiang, Chi,
Yang, arXiv 2407.04587, 2024, §4: BERT + ResNet-50); everything but the architecture is `resnet152`'s (see there)."""

from __future__ import annotations

from mmbench.api import hookimpl
from mmbench_plugins.encoders.resnet152 import ResNet152Encoder


class ResNet50Encoder(ResNet152Encoder):
    """torchvision ResNet-50 trunk -> N pooled grid tokens of 2048 channels."""

    name = "resnet50"
    arch = "resnet50"


@hookimpl
def mmbench_encoders():
    return [ResNet50Encoder]
