"""Classification data sets by name (`dataset.name`): each registers how its splits load, so a
task asks the registry instead of branching on names, and a plugin module (the `plugins` key)
adds one with its YAML and nothing else.

A source is called once per run with the dataset config and the cache directory and returns
a SplitLoader: `load(train, transform)` gives the training split (True) or the evaluation
split (False) through `transform`, as a Dataset of (PIL image, class index) with `classes`
(the class names, the same in both splits) and `targets` (each image's class index).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.data.digits import prepare_digits
from gdrq_bench.data.fashion_mnist import load_fashion_mnist
from gdrq_bench.data.imagefolder import load_imagefolder

SplitLoader = Callable[[bool, Callable | None], Dataset]
Source = Callable[[Any, str], SplitLoader]

CLASSIFICATION_SOURCES: dict[str, Source] = {}


def register_classification(name: str, source: Source) -> None:
    """Make `dataset.name=name` load through `source` (its YAML in a conf/dataset/ on
    Hydra's search path names it and extends classification_schema)."""
    CLASSIFICATION_SOURCES[name] = source


def classification_loader(dataset: Any, cache_dir: str) -> SplitLoader:
    """The split loader of the data set dataset.name names; unknown: one error naming it."""
    source = CLASSIFICATION_SOURCES.get(dataset.name)
    if source is None:
        valid = ", ".join(CLASSIFICATION_SOURCES)
        raise ConfigError(f"dataset.name={dataset.name}: unknown; valid: {valid}")
    return source(dataset, cache_dir)


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


register_classification("digits", _digits)
register_classification("fashion_mnist", _fashion_mnist)
register_classification("imagenet", _folder)
register_classification("imagefolder", _folder)
