"""Semantic segmentation data: Pascal VOC class masks, read as torchvision's references read them.

An item is (image, mask): a float32 CHW image in [0, 1] and an int64 HW mask of class indices,
0 the background and IGNORE_INDEX on pixels no metric or loss should count (VOC's object
outlines, and padding). A mask is read as its raw palette index, never converted to colour.
Every image and mask is looked for, and every mask read and checked, when a set is built, so a
bad file fails before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.bad_samples import BadSamplePolicy, UnreadableSample, read_rgb
from gdrq_bench.data.voc import IGNORE_INDEX, VOC_CLASSES, read_image_set, year_folders

VOC_SEG_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)
MASK_MODES = ("P", "L")  # palette indices (VOC) or grayscale indices (SBD converted to PNG)


@dataclass(frozen=True)
class _Pair:
    image: Path
    mask: Path


class VocSegmentationSet(Dataset):
    """VOC<year>/ImageSets/Segmentation/<split>.txt of each year under root (the VOCdevkit).

    split_file replaces those lists with one file (an augmented set such as SBD's train_aug.txt)
    whose stems are looked up in the first year's folder. Training flips at random and, with
    crop_size, takes a random crop_size square, padding a smaller image first (image with 0,
    mask with IGNORE_INDEX); evaluation returns whole images, so every labelled pixel counts.
    """

    def __init__(
        self,
        root: Path,
        years: Sequence[str],
        split: str,
        classes: Sequence[str],
        train: bool,
        crop_size: int | None = None,
        split_file: Path | None = None,
        mask_dir: str = "SegmentationClass",
        bad_samples: BadSamplePolicy | None = None,
    ) -> None:
        num_classes = len(classes)
        if not 1 <= num_classes <= IGNORE_INDEX:
            raise ValueError(f"num_classes is {num_classes}, not in 1..{IGNORE_INDEX}")
        if crop_size is not None and crop_size < 1:
            raise ValueError(f"crop_size is {crop_size}, not a positive number of pixels")
        self.classes, self.num_classes = list(classes), num_classes
        self.train = train
        self.stems: list[str] = []
        self._pairs: list[_Pair] = []
        for voc, listing in _listings(root, years, split, split_file):
            for stem in read_image_set(listing):
                pair = _Pair(voc / "JPEGImages" / f"{stem}.jpg", voc / mask_dir / f"{stem}.png")
                try:
                    _check_pair(pair, listing, num_classes)
                except UnreadableSample as error:  # skipped now, or named, per the policy
                    (bad_samples or BadSamplePolicy()).handle(error)
                    continue
                self.stems.append(stem)
                self._pairs.append(pair)
        self._transform = _train_transform(crop_size) if train else None

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        pair = self._pairs[index]
        image = tv_tensors.Image(v2.functional.pil_to_tensor(read_rgb(pair.image)))
        mask = tv_tensors.Mask(torch.from_numpy(_read_mask(pair.mask)))
        if self._transform is not None:
            image, mask = self._transform(image, mask)
        image = v2.functional.to_dtype(image.as_subclass(Tensor), torch.float32, scale=True)
        return image, mask.as_subclass(Tensor).to(torch.int64)


def collate_segmentation(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Pads each item at its bottom and right to the batch's largest height and width, then
    stacks: images (B, 3, H, W) padded with 0, masks (B, H, W) padded with IGNORE_INDEX."""
    height = max(mask.shape[0] for _, mask in batch)
    width = max(mask.shape[1] for _, mask in batch)
    first_image, first_mask = batch[0]
    images = first_image.new_zeros((len(batch), first_image.shape[0], height, width))
    masks = first_mask.new_full((len(batch), height, width), IGNORE_INDEX)
    for i, (image, mask) in enumerate(batch):
        images[i, :, : image.shape[1], : image.shape[2]] = image
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks


def _listings(
    root: Path, years: Sequence[str], split: str, split_file: Path | None
) -> list[tuple[Path, Path]]:
    """(VOC<year> folder, image set file) pairs whose stems make up the set, in order."""
    folders = year_folders(root, years)
    if split_file is not None:
        return [(folders[0], Path(split_file).expanduser())]
    return [(voc, voc / "ImageSets" / "Segmentation" / f"{split}.txt") for voc in folders]


def _train_transform(crop_size: int | None) -> v2.Transform:
    steps: list[v2.Transform] = [v2.RandomHorizontalFlip(p=0.5)]
    if crop_size is not None:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    return v2.Compose(steps)


def _check_pair(pair: _Pair, listing: Path, num_classes: int) -> None:
    for kind, path in (("image", pair.image), ("mask", pair.mask)):
        if not path.is_file():
            raise DataError(f"VOC {kind} {path} does not exist (listed in {listing})")
    image_size = _header_size(pair.image)
    values = _read_mask(pair.mask)
    mask_size = (values.shape[1], values.shape[0])
    if mask_size != image_size:
        raise DataError(
            f"mask {pair.mask} is {mask_size[0]}x{mask_size[1]} but its image {pair.image} "
            f"is {image_size[0]}x{image_size[1]}"
        )
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
    if bad.size:
        raise DataError(
            f"mask {pair.mask} holds class indices {bad.tolist()}; valid are "
            f"0..{num_classes - 1} and {IGNORE_INDEX} (ignore)"
        )


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header; PIL decodes pixels only when they are used."""
    try:
        with Image.open(path) as file:
            return file.size
    except OSError as error:
        raise UnreadableSample(f"cannot read image {path}: {error}") from None


def _read_mask(path: Path) -> np.ndarray:
    """The (H, W) uint8 class indices of a palette or grayscale PNG."""
    try:
        with Image.open(path) as file:
            if file.mode not in MASK_MODES:
                raise DataError(
                    f"mask {path} has PIL mode {file.mode}; expected class indices in a "
                    f"palette (P) or grayscale (L) PNG"
                )
            return np.array(file)
    except OSError as error:
        raise DataError(f"cannot read mask {path}: {error}") from None
