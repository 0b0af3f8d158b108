"""Data sets by task and name (`dataset.name`): each registers how its splits load, so a
task asks the registry instead of branching on names, and a plugin module (the `plugins` key)
adds one with its YAML (in a conf/dataset/ on Hydra's search path, extending the task's
dataset schema) and nothing else. The built-in ones register in classification_sets.py,
detection_sets.py and segmentation_sets.py, imported on a task's first lookup.

A source is called once per run with the dataset config and the cache directory and returns
the task's split loader:
- classification: `load(train, transform)`: the training split (True) or the evaluation split
  (False) through `transform`, as a Dataset of (PIL image, class index) with `classes` (the
  class names, the same in both splits) and `targets` (each image's class index);
- detection: `load(training_split, train)`: a CocoDetectionSet or VocDetectionSet of
  dataset.train_split (True) or dataset.val_split, with the training flips when `train`;
- segmentation: `load(training_split, train, bad_samples)`: a Dataset of (image, mask) pairs
  with `classes` (background first), unreadable pairs handled by the `bad_samples` policy.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from torch.utils.data import Dataset

from gdrq_bench.config.errors import ConfigError

SplitLoader = Callable[..., Dataset]
Source = Callable[[Any, str], SplitLoader]

BUILT_IN = {
    "classification": "gdrq_bench.data.classification_sets",
    "detection": "gdrq_bench.data.detection_sets",
    "segmentation": "gdrq_bench.data.segmentation_sets",
}
_SOURCES: dict[str, dict[str, Source]] = {task: {} for task in BUILT_IN}


def register_dataset(task: str, name: str, source: Source) -> None:
    """Make `dataset.name=name` of `task` load through `source`."""
    if task not in _SOURCES:
        raise ValueError(f"task {task!r} is unknown: use one of {sorted(_SOURCES)}")
    _SOURCES[task][name] = source


def dataset_loader(task: str, dataset: Any, cache_dir: str) -> SplitLoader:
    """The split loader of the `task` data set dataset.name names; unknown: one error naming
    it and the valid names."""
    import_module(BUILT_IN[task])
    source = _SOURCES[task].get(dataset.name)
    if source is None:
        valid = ", ".join(_SOURCES[task])
        raise ConfigError(f"dataset.name={dataset.name}: unknown; valid: {valid}")
    return source(dataset, cache_dir)
