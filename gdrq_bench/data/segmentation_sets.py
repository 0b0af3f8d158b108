"""The built-in segmentation data sets: PASCAL VOC's class masks and the embedded shapes scenes
written in the same layout. Loader: data/registry.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdrq_bench.data.bad_samples import BadSamplePolicy
from gdrq_bench.data.registry import SplitLoader, register_dataset
from gdrq_bench.data.segmentation import VOC_SEG_CLASSES, VocSegmentationSet
from gdrq_bench.data.shapes import SHAPE_CLASSES, prepare_shapes, voc_root


def _voc_layout(dataset: Any, root: Path, classes: list[str]) -> SplitLoader:
    """VOC<year>/ folders under root; dataset.split_file (an augmented list) replaces the
    training split's image sets."""
    split_file = Path(dataset.split_file).expanduser() if dataset.split_file else None

    def load(training_split: bool, train: bool, bad_samples: BadSamplePolicy) -> VocSegmentationSet:
        return VocSegmentationSet(
            root=root,
            years=list(dataset.years),
            split=dataset.train_split if training_split else dataset.val_split,
            classes=classes,
            train=train,
            crop_size=dataset.crop_size if train else None,
            split_file=split_file if training_split else None,
            mask_dir=dataset.mask_dir,
            bad_samples=bad_samples,
        )

    return load


def _voc(dataset: Any, cache_dir: str) -> SplitLoader:
    classes = list(dataset.classes or VOC_SEG_CLASSES)
    return _voc_layout(dataset, Path(dataset.root).expanduser(), classes)


def _shapes(dataset: Any, cache_dir: str) -> SplitLoader:
    """The scenes, written once into root; their VOC copy's masks."""
    tree = prepare_shapes(Path(dataset.root).expanduser(), dataset.image_size)
    return _voc_layout(dataset, voc_root(tree), ["background", *SHAPE_CLASSES])


register_dataset("segmentation", "shapes", _shapes)
register_dataset("segmentation", "voc", _voc)
