"""The embedded default data set: scikit-learn's 8x8 digits, written once as an ImageFolder tree.

prepare_digits(root, size) writes to root/<size>px-seed<seed>/ so trees of different image sizes
or splits sit side by side and a complete tree is never rewritten. The tree is built in a
temporary sibling directory and renamed into place, so a killed run never leaves a half tree
(at most a hidden .<size>px-seed<seed>-* directory); a tree without the marker is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from gdrq_bench.data.cached_tree import write_once

MARKER = "digits.json"
VAL_FRACTION = 0.2


def prepare_digits(root: Path, image_size: int, seed: int = 0) -> Path:
    """The tree root (root/<size>px-seed<seed>/ with train/ and val/), written if missing."""
    tree = Path(root).expanduser() / f"{image_size}px-seed{seed}"
    return write_once(tree, MARKER, lambda out: _write_tree(out, image_size, seed))


def _write_tree(out: Path, image_size: int, seed: int) -> None:
    # imported here: scikit-learn takes seconds to import and is needed only for the first run
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    index = np.arange(len(pixels))
    train, val = train_test_split(
        index, test_size=VAL_FRACTION, stratify=digits.target, random_state=seed
    )
    for split, indices in (("train", train), ("val", val)):
        for i in indices:
            folder = out / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pixels[i])  # uint8 2-D: mode "L"
            image.resize((image_size, image_size), Image.BICUBIC).save(folder / f"{i}.png")
    marker = {"image_size": image_size, "seed": seed, "train": len(train), "val": len(val)}
    (out / MARKER).write_text(json.dumps(marker))
