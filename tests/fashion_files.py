"""A tiny Fashion-MNIST written by the tests in the original IDX format (gzipped), so nothing
needs the apt package."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def write_idx_set(root: Path, train: int = 40, test: int = 20, seed: int = 0) -> Path:
    """root/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz: 28x28 images whose brightness
    tells the class (0..9), so a network can learn them."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        labels = np.arange(count, dtype=np.uint8) % 10
        images = rng.integers(0, 40, (count, 28, 28), dtype=np.uint8)
        images[:, 8:20, 8:20] += (labels * 20)[:, None, None].astype(np.uint8)
        header = struct.pack(">IIII", IMAGES_MAGIC, count, 28, 28)
        _write(root / f"{split}-images-idx3-ubyte.gz", header + images.tobytes())
        _write(
            root / f"{split}-labels-idx1-ubyte.gz",
            struct.pack(">II", LABELS_MAGIC, count) + labels.tobytes(),
        )
    return root


def _write(path: Path, data: bytes) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(data)
