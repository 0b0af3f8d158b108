"""ImageNet as torchvision.datasets.ImageNet lays it out: ROOT/train/<wnid>/*.JPEG (what its
train archive unpacks to), the validation images flat in ROOT/val/ (ILSVRC2012_val_*.JPEG, as
the validation archive unpacks), and the devkit archive ILSVRC2012_devkit_t12.tar.gz (or the
meta.bin torchvision parses it into) giving each validation image's class.

The devkit is read here rather than by torchvision's parse_devkit_archive, which accepts only
the archive whose MD5 it knows: the same members (data/meta.mat's synsets, the ground-truth
list) are read with tarfile and scipy, and nothing is written into ROOT (it may be read-only).
Class indices are the sorted WNIDs, as ImageFolder and torchvision's pretrained weights
number them.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.bad_samples import read_rgb

DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
META_BIN = "meta.bin"  # torchvision's parse of the devkit: (wnid -> class names, val wnids)
META_MAT = "ILSVRC2012_devkit_t12/data/meta.mat"
GROUND_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def has_flat_split(folder: Path) -> bool:
    """`folder` holds images directly and no class folders (the unpacked validation archive)."""
    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    return not any(entry.is_dir() for entry in entries) and any(
        entry.suffix.lower() in IMAGE_SUFFIXES for entry in entries
    )


def validation_wnids(root: Path, folder: Path) -> list[str]:
    """Each image's WNID in the flat validation `folder`, in file-name order, from ROOT's
    devkit archive (or the meta.bin torchvision made of it); a missing or malformed file is
    named in one line."""
    archive, meta_bin = root / DEVKIT, root / META_BIN
    if archive.is_file():
        return _read_devkit(archive)
    if meta_bin.is_file():
        try:
            return list(torch.load(meta_bin, weights_only=True)[1])
        except Exception as error:  # torch's unpickling errors vary: name the file
            problem = f"cannot read {meta_bin} (torchvision's devkit parse): {error}"
            raise DataError(problem) from None
    raise DataError(
        f"{archive} is missing: the flat validation folder {folder} needs the ImageNet "
        f"devkit archive beside it (or torchvision's {META_BIN}) to give each image its class"
    )


def _member(devkit: tarfile.TarFile, archive: Path, name: str) -> bytes:
    try:
        extracted = devkit.extractfile(name)
    except KeyError:
        extracted = None
    if extracted is None:
        raise DataError(f"{archive} has no {name}: not an ImageNet 2012 devkit archive")
    return extracted.read()


def _read_devkit(archive: Path) -> list[str]:
    import scipy.io  # scikit-learn's dependency; loaded only for a devkit

    try:
        with tarfile.open(archive) as devkit:
            meta = _member(devkit, archive, META_MAT)
            truth = _member(devkit, archive, GROUND_TRUTH)
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"cannot read {archive}: {error}") from None
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        leaves = synsets["num_children"] == 0
        wnid_of = dict(
            zip(
                (int(index) for index in synsets["ILSVRC2012_ID"][leaves]),
                (str(wnid) for wnid in synsets["WNID"][leaves]),
                strict=True,
            )
        )
    except Exception as error:  # scipy's and numpy's errors vary: name the member
        raise DataError(f"cannot read {archive}: {META_MAT}: {error}") from None
    return _ground_truth(truth.decode(errors="replace"), wnid_of, f"{archive}: {GROUND_TRUTH}")


def _ground_truth(text: str, wnid_of: dict[int, str], where: str) -> list[str]:
    """The WNID of each line's class index; a line that is not one of them is named."""
    wnids = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            wnids.append(wnid_of[int(line)])
        except (ValueError, KeyError):
            raise DataError(
                f"{where} line {number}: {line.strip()!r} is not a class index of the devkit "
                f"(1..{len(wnid_of)})"
            ) from None
    return wnids


class FlatValidationSet(Dataset):
    """The flat validation folder, labelled by the devkit: image i (in file-name order) has
    the class of wnids[i]; `classes` are the sorted WNIDs (the training folders' names)."""

    def __init__(self, folder: Path, wnids: list[str], transform: Callable | None) -> None:
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(self.files) != len(wnids):
            raise DataError(
                f"{folder} holds {len(self.files)} images but the devkit's ground truth "
                f"lists {len(wnids)}: the validation folder is incomplete or not ImageNet 2012's"
            )
        self.root, self.transform = str(folder), transform
        self.classes = sorted(set(wnids))
        index = {wnid: position for position, wnid in enumerate(self.classes)}
        self.targets = [index[wnid] for wnid in wnids]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[object, int]:
        image = read_rgb(self.files[index])
        return (self.transform(image) if self.transform else image), self.targets[index]
