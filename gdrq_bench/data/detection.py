"""Object detection data: COCO json and Pascal VOC XML, read into torchvision's target format.

An item is (image, target): a float32 CHW image in [0, 1] and a dict with boxes (N, 4) float32
xyxy in pixels (continuous: pixel i covers [i, i + 1)), labels (N,) int64 in 1..K (0 is the
background) and image_id; evaluation sets add difficult (N,) bool. Annotations are read and
checked, and every image is looked for, when a set is built, so a bad file fails before training.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.bad_samples import read_rgb
from gdrq_bench.data.voc import read_image_set, year_folders

logger = logging.getLogger(__name__)

MIN_BOX_SIDE = 1e-3
COCO_KEYS = ("images", "annotations", "categories")

Target = dict[str, Tensor | int]


@dataclass(frozen=True)
class _Record:
    image: Path
    source: Path  # the annotation file that describes the image, for error messages
    size: tuple[int, int]  # height, width, as the annotation says
    image_id: int
    boxes: Tensor
    labels: Tensor
    difficult: Tensor


class _DetectionSet(Dataset):
    """Decodes a record's image and, when training, flips image and boxes at random."""

    def __init__(self, classes: Sequence[str], records: list[_Record], train: bool) -> None:
        self.classes = list(classes)
        self.train = train
        self._records = records
        self._flip = v2.RandomHorizontalFlip(p=0.5)

    @property
    def num_classes(self) -> int:
        return len(self.classes) + 1

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        record = self._records[index]
        image = _read_image(record)
        boxes = record.boxes.clone()
        if self.train:
            canvas = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=record.size)
            image, boxes = self._flip(tv_tensors.Image(image), canvas)
            image, boxes = image.as_subclass(Tensor), boxes.as_subclass(Tensor)
        target: Target = {
            "boxes": boxes,
            "labels": record.labels.clone(),
            "image_id": record.image_id,
        }
        if not self.train:
            target["difficult"] = record.difficult.clone()
        return image, target


class CocoDetectionSet(_DetectionSet):
    """A COCO-format annotation file and its image folder; crowd and degenerate boxes dropped."""

    def __init__(self, image_dir: Path, annotation_file: Path, train: bool) -> None:
        image_dir = Path(image_dir).expanduser()
        annotation_file = Path(annotation_file).expanduser()
        if not image_dir.is_dir():
            raise DataError(f"COCO image folder {image_dir} does not exist")
        if not annotation_file.is_file():
            raise DataError(f"COCO annotation file {annotation_file} does not exist")
        self.coco = COCO()
        self.coco.dataset = _read_coco_json(annotation_file)
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()
        self.image_ids = sorted(self.coco.imgs)
        self.category_ids = sorted(self.coco.cats)
        _check_images_exist(image_dir, annotation_file, self.coco)
        label_of = {category_id: i + 1 for i, category_id in enumerate(self.category_ids)}
        records = [
            _coco_record(self.coco, image_id, image_dir, annotation_file, label_of)
            for image_id in self.image_ids
        ]
        kept = sum(len(record.labels) for record in records)
        dropped = sum(not a.get("iscrowd", 0) for a in self.coco.anns.values()) - kept
        if dropped:
            logger.warning(
                "dropped %d annotation(s) with a degenerate box (width or height <= %g after "
                "clipping to the image) from %s",
                dropped,
                MIN_BOX_SIDE,
                annotation_file,
            )
        names = [self.coco.cats[category_id]["name"] for category_id in self.category_ids]
        super().__init__(names, records, train)

    def label_to_category(self, label: int) -> int:
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} is not in 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]


class VocDetectionSet(_DetectionSet):
    """Pascal VOC: VOC<year>/ImageSets/Main/<split>.txt of each year under root (the VOCdevkit).

    Difficult objects are left out of training targets and kept, flagged, in evaluation targets,
    as the VOC protocol neither rewards nor penalises detecting them. target["image_id"] is the
    index into .stems.
    """

    def __init__(
        self, root: Path, years: Sequence[str], split: str, classes: Sequence[str], train: bool
    ) -> None:
        label_of = {name: i + 1 for i, name in enumerate(classes)}
        self.stems: list[str] = []
        records: list[_Record] = []
        for voc in year_folders(root, years):
            for stem in read_image_set(voc / "ImageSets" / "Main" / f"{split}.txt"):
                records.append(_read_voc_xml(voc, stem, len(records), label_of, train))
                self.stems.append(stem)
        self.image_ids = list(range(len(self.stems)))
        super().__init__(classes, records, train)


def collate_detection(batch: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Images differ in size, so a batch stays a list of images and a list of targets."""
    return [image for image, _ in batch], [target for _, target in batch]


def _record(
    image: Path,
    source: Path,
    size: tuple[int, int],
    image_id: int,
    boxes: list[list[float]],
    labels: list[int],
    difficult: list[bool],
) -> _Record:
    return _Record(
        image=image,
        source=source,
        size=size,
        image_id=image_id,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        difficult=torch.tensor(difficult, dtype=torch.bool),
    )


def _read_image(record: _Record) -> Tensor:
    image = read_rgb(record.image)
    if image.size[::-1] != record.size:
        raise DataError(
            f"image {record.image} is {image.width}x{image.height} but {record.source} "
            f"says {record.size[1]}x{record.size[0]}"
        )
    return v2.functional.to_dtype(v2.functional.pil_to_tensor(image), scale=True)


def _read_coco_json(path: Path) -> dict:
    try:
        with path.open("rb") as file:
            data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON: {error}") from None
    problem = _coco_problem(data)
    if problem:
        raise DataError(f"{path} is not a COCO annotation file: {problem}")
    return data


def _coco_problem(data: object) -> str | None:
    """What makes data unusable as COCO instances (the first thing found), or None."""
    if not isinstance(data, dict):
        return "the top level is not an object"
    for key in COCO_KEYS:
        if not isinstance(data.get(key), list):
            return f'no "{key}" list'
    for image in data["images"]:
        if not (
            isinstance(image, dict)
            and isinstance(image.get("id"), int)
            and isinstance(image.get("file_name"), str)
            and all(isinstance(image.get(k), int) and image[k] > 0 for k in ("width", "height"))
        ):
            return f"image entry {image!r:.80} lacks an int id, a file_name or a width and height"
    for category in data["categories"]:
        if not (isinstance(category, dict) and isinstance(category.get("id"), int)):
            return f"category entry {category!r:.80} has no int id"
        if not isinstance(category.get("name"), str):
            return f"category {category['id']} has no name"
    image_ids = {image["id"] for image in data["images"]}
    category_ids = {category["id"] for category in data["categories"]}
    for annotation in data["annotations"]:
        if not (isinstance(annotation, dict) and isinstance(annotation.get("id"), int)):
            return f"annotation entry {annotation!r:.80} has no int id"
        name = f"annotation {annotation['id']}"
        if not _is_box(annotation.get("bbox")):
            return f"{name} has bbox {annotation.get('bbox')!r:.80}, not 4 numbers"
        if annotation.get("image_id") not in image_ids:
            return f"{name} refers to unknown image_id {annotation.get('image_id')!r}"
        if annotation.get("category_id") not in category_ids:
            return f"{name} refers to unknown category_id {annotation.get('category_id')!r}"
    return None


def _is_box(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )


def _check_images_exist(image_dir: Path, annotation_file: Path, coco: COCO) -> None:
    paths = [image_dir / image["file_name"] for image in coco.dataset["images"]]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"image {missing[0]} does not exist ({len(missing)} of the {len(paths)} images "
            f"listed in {annotation_file} are missing)"
        )


def _coco_record(
    coco: COCO, image_id: int, image_dir: Path, annotation_file: Path, label_of: dict[int, int]
) -> _Record:
    info = coco.imgs[image_id]
    width, height = info["width"], info["height"]
    boxes, labels = [], []
    for annotation in coco.imgToAnns[image_id]:
        if annotation.get("iscrowd", 0):
            continue
        x, y, w, h = annotation["bbox"]
        x0, x1 = (min(max(v, 0.0), width) for v in (x, x + w))
        y0, y1 = (min(max(v, 0.0), height) for v in (y, y + h))
        if x1 - x0 > MIN_BOX_SIDE and y1 - y0 > MIN_BOX_SIDE:
            boxes.append([x0, y0, x1, y1])
            labels.append(label_of[annotation["category_id"]])
    image = image_dir / info["file_name"]
    no_difficult = [False] * len(labels)
    return _record(image, annotation_file, (height, width), image_id, boxes, labels, no_difficult)


def _read_voc_xml(
    voc: Path, stem: str, image_id: int, label_of: dict[str, int], train: bool
) -> _Record:
    path = voc / "Annotations" / f"{stem}.xml"
    if not path.is_file():
        raise DataError(f"VOC annotation {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DataError(f"{path} is not valid XML: {error}") from None
    image = voc / "JPEGImages" / (root.findtext("filename") or f"{stem}.jpg").strip()
    if not image.is_file():
        raise DataError(f"VOC image {image} does not exist (named by {path})")
    size = (_xml_number(root, "size/height", path), _xml_number(root, "size/width", path))
    boxes, labels, difficult = [], [], []
    for item in root.findall("object"):
        name = (item.findtext("name") or "").strip()
        if name not in label_of:
            raise DataError(f"{path}: object class {name!r} is not one of {list(label_of)}")
        hard = (item.findtext("difficult") or "0").strip() == "1"
        if train and hard:
            continue
        x0, y0, x1, y1 = (
            _xml_number(item, f"bndbox/{tag}", path) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        boxes.append([x0 - 1, y0 - 1, x1, y1])  # VOC numbers pixels from 1, inclusive
        labels.append(label_of[name])
        difficult.append(hard)
    return _record(image, path, (int(size[0]), int(size[1])), image_id, boxes, labels, difficult)


def _xml_number(element: ET.Element, tag: str, path: Path) -> float:
    text = element.findtext(tag)
    if text is None:
        raise DataError(f"{path}: <{tag}> is missing")
    try:
        return float(text or "")
    except ValueError:
        raise DataError(f"{path}: <{tag}> is {text!r}, not a number") from None
