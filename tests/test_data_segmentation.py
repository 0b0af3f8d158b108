"""Segmentation data: the VOC loader over the embedded shapes tree, its transforms and errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.segmentation import VOC_SEG_CLASSES, VocSegmentationSet, collate_segmentation
from gdrq_bench.data.shapes import SHAPE_CLASSES, prepare_shapes, voc_palette, voc_root
from gdrq_bench.data.voc import IGNORE_INDEX

SIZE = 64
CLASSES = ["background", *SHAPE_CLASSES]
NUM_CLASSES = len(CLASSES)
VALID = {0, 1, 2, 3, IGNORE_INDEX}


@pytest.fixture(scope="module")
def devkit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = prepare_shapes(tmp_path_factory.mktemp("shapes"), SIZE, train_images=8, val_images=4)
    return voc_root(tree)


@pytest.fixture
def devkit_copy(devkit: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(devkit, tmp_path / "VOCdevkit"))


def load(root: Path, split: str = "val", train: bool = False, **options) -> VocSegmentationSet:
    return VocSegmentationSet(root, ["2007"], split, CLASSES, train=train, **options)


def stems_of(root: Path, split: str) -> list[str]:
    return (root / "VOC2007/ImageSets/Segmentation" / f"{split}.txt").read_text().split()


def decoded(root: Path, stem: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The image in [0, 1] and the raw mask indices, read here independently of the loader."""
    voc = root / "VOC2007"
    rgb = np.array(Image.open(voc / "JPEGImages" / f"{stem}.jpg").convert("RGB"))
    indices = np.array(Image.open(voc / "SegmentationClass" / f"{stem}.png"))
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return image, torch.from_numpy(indices).long()


def write_mask(path: Path, values: np.ndarray) -> None:
    mask = Image.fromarray(values.astype(np.uint8), mode="P")
    mask.putpalette(voc_palette())
    mask.save(path)


def test_voc_class_names() -> None:
    assert len(VOC_SEG_CLASSES) == 21
    assert VOC_SEG_CLASSES[0] == "background" and VOC_SEG_CLASSES[15] == "person"


def test_evaluation_items_are_whole_decoded_pairs(devkit: Path) -> None:
    dataset = load(devkit)
    assert dataset.stems == stems_of(devkit, "val") and len(dataset) == 4
    assert dataset.num_classes == NUM_CLASSES
    objects = 0
    for index, stem in enumerate(dataset.stems):
        image, mask = dataset[index]
        assert image.dtype == torch.float32 and image.shape == (3, SIZE, SIZE)
        assert mask.dtype == torch.int64 and mask.shape == (SIZE, SIZE)
        expected_image, expected_mask = decoded(devkit, stem)
        assert torch.allclose(image, expected_image) and torch.equal(mask, expected_mask)
        assert set(mask.unique().tolist()) <= VALID
        objects += int(((mask > 0) & (mask < NUM_CLASSES)).sum())
    assert objects > 0


def test_years_and_split_file(devkit_copy: Path, tmp_path: Path) -> None:
    shutil.copytree(devkit_copy / "VOC2007", devkit_copy / "VOC2012")
    both = VocSegmentationSet(devkit_copy, ["2007", "2012"], "train", CLASSES, train=False)
    assert both.stems == stems_of(devkit_copy, "train") * 2
    chosen = stems_of(devkit_copy, "trainval")[::3]
    listing = tmp_path / "train_aug.txt"
    listing.write_text("".join(f"{stem}\n" for stem in chosen))
    (devkit_copy / "VOC2007/JPEGImages" / f"{chosen[0]}.jpg").unlink()  # only the first year's
    subset = VocSegmentationSet(
        devkit_copy, ["2012", "2007"], "train", CLASSES, train=False, split_file=listing
    )
    assert subset.stems == chosen


def test_flip_moves_image_and_mask_together(devkit: Path) -> None:
    train = load(devkit, "train", train=True)
    index = 0
    image, mask = decoded(devkit, train.stems[index])
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        train_image, train_mask = train[index]
        flipped = not torch.allclose(train_image, image)
        seen.add(flipped)
        assert torch.allclose(train_image, image.flip(-1) if flipped else image)
        assert torch.equal(train_mask, mask.flip(-1) if flipped else mask)
    assert seen == {False, True}
    assert not torch.equal(mask, mask.flip(-1))  # the scene is not symmetric


def window_offsets(
    small: tuple[torch.Tensor, torch.Tensor], large: tuple[torch.Tensor, torch.Tensor]
) -> list[tuple[int, int]]:
    """Every (top, left) at which the small pair equals a window of the large pair."""
    (small_image, small_mask), (large_image, large_mask) = small, large
    h, w = small_mask.shape
    return [
        (top, left)
        for top in range(large_mask.shape[0] - h + 1)
        for left in range(large_mask.shape[1] - w + 1)
        if torch.equal(large_mask[top : top + h, left : left + w], small_mask)
        and torch.allclose(large_image[:, top : top + h, left : left + w], small_image)
    ]


def test_crop_takes_a_window_of_image_and_mask(devkit: Path) -> None:
    train = load(devkit, "train", train=True, crop_size=40)
    full = decoded(devkit, train.stems[0])
    flipped = tuple(x.flip(-1) for x in full)
    for seed in range(3):
        torch.manual_seed(seed)
        image, mask = train[0]
        assert image.shape == (3, 40, 40) and mask.shape == (40, 40)
        assert window_offsets((image, mask), full) or window_offsets((image, mask), flipped)


def test_crop_pads_a_small_image_with_ignore(devkit: Path) -> None:
    train = load(devkit, "train", train=True, crop_size=80)
    full_image, full_mask = decoded(devkit, train.stems[0])
    torch.manual_seed(0)
    image, mask = train[0]
    assert image.shape == (3, 80, 80) and mask.shape == (80, 80)
    found = window_offsets((full_image, full_mask), (image, mask)) or window_offsets(
        (full_image.flip(-1), full_mask.flip(-1)), (image, mask)
    )
    assert len(found) == 1
    top, left = found[0]
    outside = torch.ones(80, 80, dtype=torch.bool)
    outside[top : top + SIZE, left : left + SIZE] = False
    assert (mask[outside] == IGNORE_INDEX).all() and (image[:, outside] == 0).all()


def test_collate_pads_with_zero_and_ignore() -> None:
    a = (torch.full((3, 2, 3), 0.5), torch.ones(2, 3, dtype=torch.int64))
    b = (torch.full((3, 4, 1), 0.25), torch.full((4, 1), 2, dtype=torch.int64))
    images, masks = collate_segmentation([a, b])
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert images.dtype == torch.float32 and masks.dtype == torch.int64
    assert masks[0].tolist() == [[1, 1, 1], [1, 1, 1], [255, 255, 255], [255, 255, 255]]
    assert masks[1].tolist() == [[2, 255, 255]] * 4
    assert (images[0, :, :2] == 0.5).all() and (images[0, :, 2:] == 0).all()
    assert (images[1, :, :, :1] == 0.25).all() and (images[1, :, :, 1:] == 0).all()
    same_images, same_masks = collate_segmentation([a, a])
    assert torch.equal(same_images, torch.stack([a[0], a[0]]))
    assert torch.equal(same_masks, torch.stack([a[1], a[1]]))


def test_grayscale_masks_are_accepted(devkit_copy: Path) -> None:
    masks = devkit_copy / "VOC2007/SegmentationClass"
    expected = load(devkit_copy)[0][1]
    stem = load(devkit_copy).stems[0]
    Image.fromarray(np.array(Image.open(masks / f"{stem}.png")), mode="L").save(
        masks / f"{stem}.png"
    )
    assert Image.open(masks / f"{stem}.png").mode == "L"
    assert torch.equal(load(devkit_copy)[0][1], expected)


def test_missing_paths(devkit_copy: Path, tmp_path: Path) -> None:
    voc = devkit_copy / "VOC2007"
    with pytest.raises(DataError, match=re.escape(f"VOC root {tmp_path / 'nope'} does not exist")):
        load(tmp_path / "nope")
    with pytest.raises(DataError, match=re.escape(str(voc / "ImageSets/Segmentation/test.txt"))):
        load(devkit_copy, "test")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "aug.txt"))):
        load(devkit_copy, split_file=tmp_path / "aug.txt")
    first, second, *_ = stems_of(devkit_copy, "val")
    mask = voc / "SegmentationClass" / f"{first}.png"
    mask.unlink()
    with pytest.raises(DataError, match=re.escape(f"VOC mask {mask} does not exist")):
        load(devkit_copy)
    image = voc / "JPEGImages" / f"{second}.jpg"
    image.unlink()
    listing = tmp_path / "listing.txt"
    listing.write_text(f"{second}\n")
    with pytest.raises(DataError, match=re.escape(f"VOC image {image} does not exist")):
        load(devkit_copy, split_file=listing)


def test_mask_size_differs_from_image(devkit_copy: Path) -> None:
    voc = devkit_copy / "VOC2007"
    stem = stems_of(devkit_copy, "val")[1]
    mask = voc / "SegmentationClass" / f"{stem}.png"
    write_mask(mask, np.array(Image.open(mask).resize((SIZE, SIZE // 2), Image.NEAREST)))
    image = voc / "JPEGImages" / f"{stem}.jpg"
    message = f"mask {mask} is {SIZE}x{SIZE // 2} but its image {image} is {SIZE}x{SIZE}"
    with pytest.raises(DataError, match=re.escape(message)):
        load(devkit_copy)


def test_mask_value_outside_the_classes(devkit_copy: Path) -> None:
    stem = stems_of(devkit_copy, "val")[2]
    mask = devkit_copy / "VOC2007/SegmentationClass" / f"{stem}.png"
    values = np.array(Image.open(mask))
    values[0, :5] = 9
    values[1, :5] = 4
    write_mask(mask, values)
    message = f"mask {mask} holds class indices [4, 9]; valid are 0..3 and 255"
    with pytest.raises(DataError, match=re.escape(message)):
        load(devkit_copy)


def test_colour_mask_is_refused(devkit_copy: Path) -> None:
    stem = stems_of(devkit_copy, "val")[0]
    mask = devkit_copy / "VOC2007/SegmentationClass" / f"{stem}.png"
    Image.open(mask).convert("RGB").save(mask)
    with pytest.raises(DataError, match=re.escape(f"mask {mask} has PIL mode RGB")):
        load(devkit_copy)
