"""The built-in detection data sets: COCO (pycocotools' layout), VOC (the devkit's) and the
embedded shapes scenes, generated into the cache and read through either. Loader:
data/registry.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdrq_bench.config.errors import check_choice
from gdrq_bench.data.detection import CocoDetectionSet, VocDetectionSet
from gdrq_bench.data.registry import SplitLoader, register_dataset
from gdrq_bench.data.shapes import SHAPE_CLASSES, coco_paths, prepare_shapes, voc_root
from gdrq_bench.data.voc import VOC_CLASSES

FORMATS = ("coco", "voc")


def _split(dataset: Any, training_split: bool) -> str:
    return dataset.train_split if training_split else dataset.val_split


def _read(dataset: Any, root: Path, classes: list[str] | None) -> SplitLoader:
    """dataset.format's reader of the tree at root: VOC<year>/ folders, or COCO's image
    folders and annotation files at dataset.image_dir and .annotation_file."""
    check_choice("dataset.format", dataset.format, FORMATS)

    def load(training_split: bool, train: bool) -> CocoDetectionSet | VocDetectionSet:
        split = _split(dataset, training_split)
        if dataset.format == "voc":
            return VocDetectionSet(root, list(dataset.years), split, classes or VOC_CLASSES, train)
        image_dir = root / dataset.image_dir.format(split=split)
        annotation_file = root / dataset.annotation_file.format(split=split)
        return CocoDetectionSet(image_dir, annotation_file, train)

    return load


def _on_disk(dataset: Any, cache_dir: str) -> SplitLoader:
    """COCO or VOC under dataset.root, as dataset.format says."""
    return _read(dataset, Path(dataset.root).expanduser(), dataset.classes)


def _shapes(dataset: Any, cache_dir: str) -> SplitLoader:
    """The scenes, written once into root as a COCO data set and a VOC one."""
    check_choice("dataset.format", dataset.format, FORMATS)
    tree = prepare_shapes(Path(dataset.root).expanduser(), dataset.image_size)
    if dataset.format == "voc":
        return _read(dataset, voc_root(tree), SHAPE_CLASSES)

    def load(training_split: bool, train: bool) -> CocoDetectionSet:
        return CocoDetectionSet(*coco_paths(tree, _split(dataset, training_split)), train)

    return load


register_dataset("detection", "shapes", _shapes)
register_dataset("detection", "coco", _on_disk)
register_dataset("detection", "voc", _on_disk)
