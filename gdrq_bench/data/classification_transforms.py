"""The image transforms of a classification data set, by its YAML's dataset.preset: small
(digits), fashion (Fashion-MNIST's greyscale 28x28) and imagenet."""

from __future__ import annotations

from torchvision import transforms as T

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import ClassificationDatasetConfig

PRESETS = ("small", "fashion", "imagenet")
FASHION_SIDE = 28  # Fashion-MNIST's images are 28x28


def build_transforms(dataset: ClassificationDatasetConfig) -> tuple[T.Compose, T.Compose]:
    """(train, eval) transforms for dataset.preset."""
    size = dataset.image_size
    if dataset.preset == "imagenet":
        train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        val = [T.Resize(dataset.resize), T.CenterCrop(size)]
    elif dataset.preset == "small":  # no flip: digits are not mirror-symmetric
        train = [T.Resize(size), T.RandomCrop(size, padding=size // 8)]
        val = [T.Resize(size), T.CenterCrop(size)]  # the crop only matters for non-square images
    elif dataset.preset == "fashion":  # greyscale 28x28, zero-padded to `size`; clothes flip
        if size < FASHION_SIDE:
            raise ConfigError(f"dataset.image_size={size}: the fashion preset pads 28x28 images")
        pad = [T.Grayscale(num_output_channels=3), T.Pad((size - FASHION_SIDE) // 2)]
        train = [*pad, T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
        val = [*pad, T.CenterCrop(size)]  # the crop only matters for an odd size difference
    else:
        raise ConfigError(f"dataset.preset={dataset.preset}: unknown; valid: {', '.join(PRESETS)}")
    tail = [T.ToTensor(), T.Normalize(list(dataset.mean), list(dataset.std))]
    return T.Compose(train + tail), T.Compose(val + tail)
