"""Classifier builders by name: torchvision's ImageNet models and the 32x32 (CIFAR-style)
ResNet-20 and MobileNetV2."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision import models

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.models.cifar_mobilenet import mobilenet_v2_cifar
from gdrq_bench.models.cifar_resnet import resnet20
from gdrq_bench.models.weights import torchvision_weights_dir

# torchvision model name -> attribute path of its final Linear (replaced for other class counts)
TORCHVISION_HEADS = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "vgg16_bn": "classifier.6",
    "mobilenet_v2": "classifier.1",
}
# networks for 32x32 inputs, built from scratch (no pretrained weights exist for them)
SMALL_IMAGE_MODELS = {"resnet20": resnet20, "mobilenet_v2_cifar": mobilenet_v2_cifar}
CLASSIFIER_NAMES = (*TORCHVISION_HEADS, *SMALL_IMAGE_MODELS)
IMAGENET_CLASSES = 1000


def check_classifier(name: str, pretrained: bool) -> None:
    """Raise the ConfigError build_classifier would, without building anything."""
    if name not in CLASSIFIER_NAMES:
        raise ConfigError(
            f"model.name={name}: unknown classifier; valid: {', '.join(CLASSIFIER_NAMES)}"
        )
    if pretrained and name not in TORCHVISION_HEADS:
        raise ConfigError(f"model.pretrained=true: no pretrained weights exist for {name}")


def build_classifier(
    name: str, num_classes: int, pretrained: bool, weights_dir: Path | None = None
) -> nn.Module:
    """pretrained loads torchvision's default ImageNet weights (kept in weights_dir/checkpoints,
    torch's hub cache if None) and then swaps the head when num_classes is not 1000."""
    check_classifier(name, pretrained)
    if name in SMALL_IMAGE_MODELS:
        return SMALL_IMAGE_MODELS[name](num_classes)
    if not pretrained:
        return models.get_model(name, num_classes=num_classes)
    weights = models.get_model_weights(name).DEFAULT
    with torchvision_weights_dir(weights_dir, weights):
        model = models.get_model(name, weights=weights)
    if num_classes != IMAGENET_CLASSES:
        parent_name, _, attr = TORCHVISION_HEADS[name].rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, nn.Linear(getattr(parent, attr).in_features, num_classes))
    return model
