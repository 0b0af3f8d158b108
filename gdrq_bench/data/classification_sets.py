"""The built-in classification data sets: ImageFolder trees (ImageNet, any ImageFolder, the
embedded digits written as one), ImageNet as torchvision lays it out (a flat validation folder
and the devkit) and Fashion-MNIST's IDX files. Loader: data/registry.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from gdrq_bench.data.digits import prepare_digits
from gdrq_bench.data.fashion_mnist import load_fashion_mnist
from gdrq_bench.data.imagefolder import load_imagefolder
from gdrq_bench.data.imagenet_devkit import FlatValidationSet, has_flat_split, validation_wnids
from gdrq_bench.data.registry import SplitLoader, register_dataset


def _imagefolder(root: Path, dataset: Any) -> SplitLoader:
    def load(train: bool, transform: Callable | None) -> Dataset:
        return load_imagefolder(
            root, dataset.train_split if train else dataset.val_split, transform
        )

    return load


def _digits(dataset: Any, cache_dir: str) -> SplitLoader:
    """scikit-learn's digits, written once into the cache as an ImageFolder tree."""
    return _imagefolder(
        prepare_digits(Path(dataset.root).expanduser(), dataset.image_size), dataset
    )


def _fashion_mnist(dataset: Any, cache_dir: str) -> SplitLoader:
    """The standard 60k/10k split of the IDX files."""
    root = Path(dataset.root).expanduser()
    return lambda train, transform: load_fashion_mnist(root, cache_dir, train, transform)


def _folder(dataset: Any, cache_dir: str) -> SplitLoader:
    """An ImageFolder tree (ImageNet's train/ and val/ class folders, or any other)."""
    return _imagefolder(Path(dataset.root).expanduser(), dataset)


def _imagenet(dataset: Any, cache_dir: str) -> SplitLoader:
    """ImageNet's class-folder tree, or torchvision's layout: the training class folders, a
    flat validation folder and the devkit that labels it (data/imagenet_devkit.py)."""
    root = Path(dataset.root).expanduser()
    validation = root / dataset.val_split
    if not has_flat_split(validation):
        return _imagefolder(root, dataset)
    wnids = validation_wnids(root, validation)

    def load(train: bool, transform: Callable | None) -> Dataset:
        if train:
            return load_imagefolder(root, dataset.train_split, transform)
        return FlatValidationSet(validation, wnids, transform)

    return load


register_dataset("classification", "digits", _digits)
register_dataset("classification", "fashion_mnist", _fashion_mnist)
register_dataset("classification", "imagenet", _imagenet)
register_dataset("classification", "imagefolder", _folder)
