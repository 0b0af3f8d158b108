"""A tiny ImageNet in torchvision's layout, written by the tests: ROOT/train/<wnid>/*.JPEG,
the validation images flat in ROOT/val/, and a devkit archive whose data/meta.mat (scipy)
and ground-truth list label them, as ILSVRC2012_devkit_t12.tar.gz does."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# (ILSVRC2012_ID, WNID, words); the devkit also lists inner synsets (num_children > 0)
LEAVES = [
    (1, "n01440764", "tench, Tinca tinca"),
    (2, "n01443537", "goldfish"),
    (3, "n01484850", "great white shark"),
]
INNER = (4, "n02512053", "fish")
SYNSET_FIELDS = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children"]


def _jpeg(path: Path, shade: int) -> None:
    pixels = np.full((40, 48, 3), shade, dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def _meta_mat() -> bytes:
    synsets = np.zeros((len(LEAVES) + 1, 1), dtype=[(name, "O") for name in SYNSET_FIELDS])
    for row, (index, wnid, words) in enumerate([*LEAVES, INNER]):
        children = len(LEAVES) if (index, wnid, words) == INNER else 0
        synsets[row, 0] = (index, wnid, words, "", children, np.zeros(0))
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_devkit(root: Path, ground_truth: str) -> None:
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as archive:
        _add(archive, "ILSVRC2012_devkit_t12/data/meta.mat", _meta_mat())
        _add(
            archive,
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
            ground_truth.encode(),
        )


def write_imagenet(root: Path, train_per_class: int = 4, val: int = 6) -> list[int]:
    """The layout above; returns each validation image's class index (sorted WNIDs)."""
    for position, (_, wnid, _) in enumerate(LEAVES):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for image in range(train_per_class):
            _jpeg(folder / f"{wnid}_{image}.JPEG", 60 * position + image)
    (root / "val").mkdir()
    devkit_ids = [1 + image % len(LEAVES) for image in range(val)][::-1]
    for image, devkit_id in enumerate(devkit_ids, 1):
        _jpeg(root / "val" / f"ILSVRC2012_val_{image:08d}.JPEG", 60 * (devkit_id - 1))
    write_devkit(root, "".join(f"{devkit_id}\n" for devkit_id in devkit_ids))
    wnids = sorted(wnid for _, wnid, _ in LEAVES)
    return [wnids.index(LEAVES[devkit_id - 1][1]) for devkit_id in devkit_ids]
