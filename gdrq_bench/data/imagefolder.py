"""ImageFolder trees (ImageNet's layout): ROOT/<split>/<class>/<image>, checked before loading."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import ImageFolder

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.bad_samples import read_rgb

LAYOUT = "expected an ImageFolder tree: ROOT/train/<class>/<image> and ROOT/val/<class>/<image>"


def load_imagefolder(root: str | Path, split: str, transform: Callable | None) -> ImageFolder:
    """The split's images as an ImageFolder, or a one-line DataError naming what is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist; {LAYOUT}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"split folder {split_dir} does not exist; {LAYOUT}")
    with os.scandir(split_dir) as entries:
        if not any(entry.is_dir() for entry in entries):
            raise DataError(f"split folder {split_dir} has no class folders; {LAYOUT}")
    # allow_empty so that empty classes reach the check below instead of torchvision's message
    dataset = ImageFolder(split_dir, transform=transform, loader=read_rgb, allow_empty=True)
    present = set(dataset.targets)
    empty = [name for index, name in enumerate(dataset.classes) if index not in present]
    if empty:
        raise DataError(
            f"split folder {split_dir} has {len(empty)} class folder(s) without images "
            f"({_preview(empty)}); {LAYOUT}"
        )
    return dataset


def check_same_classes(train: ImageFolder, val: ImageFolder) -> None:
    """Labels are class indices, so both splits must hold exactly the same class folders."""
    if train.classes == val.classes:
        return
    only_train = sorted(set(train.classes) - set(val.classes))
    only_val = sorted(set(val.classes) - set(train.classes))
    raise DataError(
        f"class folders differ between {train.root} and {val.root}: "
        f"only in {Path(train.root).name}: {_preview(only_train)}; "
        f"only in {Path(val.root).name}: {_preview(only_val)}"
    )


def _preview(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}, ... {len(names) - limit} more]" if len(names) > limit else f"[{shown}]"
