"""MobileNetV2 for 32x32 inputs: torchvision's MobileNetV2 at width 0.5 with its stem at stride
1, so a 32x32 image leaves 2x2 features instead of 1x1 (2.2 M parameters at width 1, 0.70 M
here; a training step costs about what ResNet-20's does on the CPU).

Its depthwise convs hold 9 weights per filter, whose ranges differ widely between filters: the
network where one step per tensor should fail and groups of filters should help. torchvision
registers every conv right before its BatchNorm, as the BN fold needs.
"""

from __future__ import annotations

from torchvision import models

WIDTH = 0.5


def mobilenet_v2_cifar(num_classes: int) -> models.MobileNetV2:
    model = models.MobileNetV2(num_classes=num_classes, width_mult=WIDTH)
    model.features[0][0].stride = (1, 1)  # the stem: stride 2 on ImageNet
    return model
