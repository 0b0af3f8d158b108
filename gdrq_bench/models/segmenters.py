"""Torchvision's segmentation models by head and backbone, and their prediction layers."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision import models
from torchvision.models import segmentation

from gdrq_bench.config.errors import ConfigError, check_choice
from gdrq_bench.models.weights import (
    FROM_SCRATCH_BN_MOMENTUM,
    torchvision_weights_dir,
    with_bn_momentum,
)
from gdrq_bench.quant import QuantScope

BACKBONES = {
    "deeplabv3": ("resnet50", "resnet101", "mobilenet_v3_large"),
    "fcn": ("resnet50", "resnet101"),
    "lraspp": ("mobilenet_v3_large",),
}
# The convs that output class scores: they run at first/last bits, like a classifier's head.
OUTPUT_LAYERS = {
    "deeplabv3": ("classifier.4", "aux_classifier.4"),
    "fcn": ("classifier.4", "aux_classifier.4"),
    "lraspp": ("classifier.low_classifier", "classifier.high_classifier"),
}


def check_segmenter(head: str, backbone: str, aux_loss: bool) -> None:
    """Raise the ConfigError build_segmenter would, without building anything."""
    check_choice("task.head", head, list(BACKBONES))
    check_choice("model.name", backbone, BACKBONES[head], f"a {head} backbone")
    if aux_loss and head == "lraspp":
        raise ConfigError("task.aux_loss=true: lraspp has no auxiliary classifier")


def segmenter_scope(head: str) -> QuantScope:
    return QuantScope(None, OUTPUT_LAYERS[head])


def build_segmenter(
    head: str,
    backbone: str,
    num_classes: int,
    aux_loss: bool,
    pretrained: bool,
    weights_dir: Path,
) -> nn.Module:
    """pretrained loads torchvision's ImageNet weights into the backbone only (its COCO-trained
    segmenters predict the 21 VOC classes and fit no other label set); from scratch, BatchNorm
    statistics follow the training at PyTorch's default momentum (see with_bn_momentum)."""
    check_segmenter(head, backbone, aux_loss)
    weights = models.get_model_weights(backbone).DEFAULT if pretrained else None
    options = {} if head == "lraspp" else {"aux_loss": aux_loss}
    builder = getattr(segmentation, f"{head}_{backbone}")
    with torchvision_weights_dir(weights_dir, weights):
        model = builder(weights=None, weights_backbone=weights, num_classes=num_classes, **options)
    return model if pretrained else with_bn_momentum(model, FROM_SCRATCH_BN_MOMENTUM)
