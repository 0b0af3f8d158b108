"""Fashion-MNIST from its four original IDX files, read by torchvision's FashionMNIST.

`apt-get install dataset-fashion-mnist` puts the files, gzipped, in INSTALLED_ROOT; any folder
holding the four files (gzipped or not) will do. torchvision reads them uncompressed from
<root>/FashionMNIST/raw/, so they are unpacked once into the cache, in a folder named by a hash
of their contents (another copy of the data gets its own folder, an edited one is not mistaken
for the first).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from torchvision.datasets import FashionMNIST

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.cached_tree import write_once

INSTALLED_ROOT = "/usr/share/datasets/fashion-mnist"
INSTALL = "apt-get install dataset-fashion-mnist"
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MARKER = "fashion_mnist.json"


def _source(root: Path, name: str) -> Path | None:
    """The file `name` in root, gzipped or not; None if neither is there."""
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def _unpack(source: Path, target: Path) -> None:
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as packed, target.open("wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    except (OSError, EOFError) as error:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise DataError(f"cannot read {source}: {error}") from None


def prepare_fashion_mnist(root: str | Path, cache_dir: str | Path) -> Path:
    """The folder torchvision's FashionMNIST takes as root, unpacked into the cache if needed;
    a one-line DataError when a file is missing."""
    root = Path(root).expanduser()
    sources = {name: _source(root, name) for name in FILES}
    missing = [name for name, source in sources.items() if source is None]
    if missing:
        raise DataError(
            f"dataset.root={root} lacks the Fashion-MNIST file(s) {missing} (.gz or not): "
            f"install them with `{INSTALL}` (into {INSTALLED_ROOT}) or point dataset.root at "
            f"a folder holding the four IDX files"
        )
    digest = hashlib.sha256()
    for source in sources.values():
        digest.update(source.read_bytes())
    tree = Path(cache_dir).expanduser() / "fashion_mnist" / digest.hexdigest()[:16]

    def unpack_all(out: Path) -> None:
        raw = out / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name, source in sources.items():
            _unpack(source, raw / name)
        (out / MARKER).write_text(json.dumps({"source": str(root)}))

    return write_once(tree, MARKER, unpack_all)


def load_fashion_mnist(
    root: str | Path, cache_dir: str | Path, train: bool, transform: Callable | None
) -> FashionMNIST:
    """The 60,000 training or 10,000 test images (PIL greyscale, 28x28) and their labels."""
    prepared = prepare_fashion_mnist(root, cache_dir)
    try:
        return FashionMNIST(str(prepared), train=train, transform=transform, download=False)
    except (RuntimeError, ValueError, AssertionError) as error:  # torchvision's IDX checks
        split = "train" if train else "t10k"
        raise DataError(
            f"the Fashion-MNIST {split} files in {Path(root).expanduser()} are not valid IDX "
            f"files: {error}"
        ) from None
