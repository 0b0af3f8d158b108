"""The embedded detection data set: synthetic scenes of shapes, written once in COCO and VOC form.

prepare_shapes(root, ...) writes root/<size>px-seed<seed>-n<train>-<val>/ holding the same scenes
twice: coco/ (PNG images, instances_<split>.json) and VOCdevkit/VOC2007/ (JPEG images, XML boxes,
palette segmentation masks). Like the digits tree it is built in a temporary sibling directory
and renamed into place, and a tree without the marker is refused.

Each shape is a polygon rasterised by pycocotools, as COCO's annToMask does, and its pixels are
painted from that mask, so the COCO polygon, the mask, the box, the area and the drawn pixels
agree exactly. Shapes never touch: a placement is rejected when its box IoU with an earlier shape
exceeds MAX_IOU or when it comes within MIN_GAP pixels of one, so every object is fully visible
and the VOC outline band never covers another object.
"""

from __future__ import annotations

import json
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from gdrq_bench.data.cached_tree import write_once
from gdrq_bench.data.voc import IGNORE_INDEX

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
# not contiguous on purpose, as COCO's own ids (1..90 with gaps) are not
SHAPE_CATEGORY_IDS: tuple[int, ...] = (3, 7, 12)

MARKER = "shapes.json"
VOC_YEAR = "2007"
SIZE_RANGE = (0.15, 0.5)  # side or diameter, as a fraction of the image size
MAX_SHAPES = 4
MAX_IOU = 0.3
MIN_GAP = 3
PLACEMENT_TRIES = 20
EMPTY_PROBABILITY = 0.03  # besides the last image of each split, which is always empty
DIFFICULT_FRACTION = 0.2  # VOC difficult: both box sides below this fraction of the image
CIRCLE_POINTS = 24
BAND_WIDTH = 3
MIN_CONTRAST = 120.0  # Euclidean RGB distance between a shape and the background


@dataclass(frozen=True)
class Shape:
    label: int  # index into SHAPE_CLASSES
    polygon: list[float]  # COCO's flat x1, y1, x2, y2, ...; pixel i covers [i, i + 1)
    mask: np.ndarray  # bool (H, W): the polygon rasterised by pycocotools
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive: pixel edges


def prepare_shapes(
    root: Path, image_size: int = 128, seed: int = 0, train_images: int = 192, val_images: int = 64
) -> Path:
    """The tree root (see the module docstring), written if missing."""
    tree = Path(root).expanduser() / f"{image_size}px-seed{seed}-n{train_images}-{val_images}"
    return write_once(
        tree,
        MARKER,
        lambda out: _write_tree(out, image_size, seed, {"train": train_images, "val": val_images}),
    )


def coco_paths(tree: Path, split: str) -> tuple[Path, Path]:
    """The split's image folder and annotation file in a prepare_shapes tree."""
    coco = Path(tree) / "coco"
    return coco / split, coco / "annotations" / f"instances_{split}.json"


def voc_root(tree: Path) -> Path:
    """The VOCdevkit folder (holding VOC2007/) of a prepare_shapes tree."""
    return Path(tree) / "VOCdevkit"


def voc_palette() -> list[int]:
    """The standard VOC colour map as a flat 768-entry PIL palette (255 -> (224, 224, 192))."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
        palette += rgb
    return palette


def _write_tree(out: Path, image_size: int, seed: int, counts: dict[str, int]) -> None:
    rng = np.random.default_rng(seed)
    voc = voc_root(out) / f"VOC{VOC_YEAR}"
    for folder in ("JPEGImages", "Annotations", "SegmentationClass"):
        (voc / folder).mkdir(parents=True)
    (out / "coco" / "annotations").mkdir(parents=True)
    image_id, annotation_id = 1, 1  # both unique across the splits, as in COCO
    for split, count in counts.items():
        image_dir, annotation_file = coco_paths(out, split)
        image_dir.mkdir()
        coco = _coco_skeleton()
        stems = []
        for index in range(count):
            empty = index == count - 1 or rng.random() < EMPTY_PROBABILITY
            shapes = [] if empty else _place_shapes(rng, image_size)
            stem = f"{image_id:06d}"
            _write_scene(image_dir, voc, stem, _render(rng, image_size, shapes), shapes)
            coco["images"].append(
                {
                    "id": image_id,
                    "file_name": f"{stem}.png",
                    "width": image_size,
                    "height": image_size,
                }
            )
            for shape in shapes:
                coco["annotations"].append(_coco_annotation(shape, annotation_id, image_id))
                annotation_id += 1
            stems.append(stem)
            image_id += 1
        annotation_file.write_text(json.dumps(coco))
        _write_image_set(voc, split, stems)
    _write_image_set(voc, "trainval", [f"{i:06d}" for i in range(1, image_id)])
    marker = {"image_size": image_size, "seed": seed, **counts, "classes": list(SHAPE_CLASSES)}
    (out / MARKER).write_text(json.dumps(marker))


def _write_scene(
    image_dir: Path, voc: Path, stem: str, image: Image.Image, shapes: list[Shape]
) -> None:
    """One scene's COCO image and VOC image, segmentation mask and XML."""
    size = image.width
    image.save(image_dir / f"{stem}.png", compress_level=1)
    image.save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
    _segmentation_mask(size, shapes).save(voc / "SegmentationClass" / f"{stem}.png")
    (voc / "Annotations" / f"{stem}.xml").write_bytes(_voc_xml(stem, size, shapes))


def _place_shapes(rng: np.random.Generator, image_size: int) -> list[Shape]:
    shapes: list[Shape] = []
    keep_out = np.zeros((image_size, image_size), dtype=bool)  # earlier shapes, grown by MIN_GAP
    for _ in range(rng.integers(1, MAX_SHAPES + 1)):
        for _ in range(PLACEMENT_TRIES):
            shape = _random_shape(rng, image_size)
            if not (shape.mask & keep_out).any() and all(
                _box_iou(shape.box, other.box) <= MAX_IOU for other in shapes
            ):
                shapes.append(shape)
                keep_out |= _grow(shape.mask, MIN_GAP)
                break
    return shapes


def _random_shape(rng: np.random.Generator, image_size: int) -> Shape:
    label = int(rng.integers(len(SHAPE_CLASSES)))
    size = rng.uniform(*SIZE_RANGE) * image_size
    points = _outline_at_origin(SHAPE_CLASSES[label], size, rng.uniform(0, 2 * math.pi))
    xs, ys = points[:, 0], points[:, 1]
    # the whole polygon inside [0, image_size], so the shape is never cut by the border
    dx = rng.uniform(-xs.min(), image_size - xs.max())
    dy = rng.uniform(-ys.min(), image_size - ys.max())
    polygon = [round(float(v), 2) for x, y in points for v in (x + dx, y + dy)]
    rles = mask_utils.frPyObjects([polygon], image_size, image_size)
    with warnings.catch_warnings():  # pycocotools' decode predates numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return Shape(label, polygon, mask, box)


def _outline_at_origin(name: str, size: float, angle: float) -> np.ndarray:
    if name == "circle":
        corners, radius = CIRCLE_POINTS, size / 2
    elif name == "square":
        corners, radius = 4, size / math.sqrt(2)
    else:  # equilateral triangle of side `size`
        corners, radius = 3, size / math.sqrt(3)
    theta = angle + np.arange(corners) * (2 * math.pi / corners)
    return radius * np.stack([np.cos(theta), np.sin(theta)], axis=1)


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask dilated by a (2 * pixels + 1)-square: True within `pixels` of a True pixel."""
    h, w = mask.shape
    padded = np.pad(mask, pixels)
    rows = np.zeros((h + 2 * pixels, w), dtype=bool)
    for dx in range(2 * pixels + 1):
        rows |= padded[:, dx : dx + w]
    grown = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        grown |= rows[dy : dy + h]
    return grown


def _box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _render(rng: np.random.Generator, image_size: int, shapes: list[Shape]) -> Image.Image:
    """A linear gradient between two nearby colours, the shapes in solid colour, mild noise."""
    start = rng.uniform(30, 225, size=3)
    end = np.clip(start + rng.uniform(-40, 40, size=3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:image_size, 0:image_size] / max(image_size - 1, 1)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle))[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    pixels = start + (end - start) * ramp
    for shape in shapes:
        pixels[shape.mask] = _contrasting_colour(rng, (start + end) / 2)
    pixels += rng.normal(0, 3, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, ...]:
    while True:  # terminates: every background colour is far from some corner of the RGB cube
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(colour - background) >= MIN_CONTRAST:
            return tuple(int(c) for c in colour)


def _segmentation_mask(image_size: int, shapes: list[Shape]) -> Image.Image:
    """VOC SegmentationClass: label + 1 on each shape, IGNORE_INDEX in a band on its edge."""
    values = np.zeros((image_size, image_size), dtype=np.uint8)
    for shape in shapes:
        values[shape.mask] = shape.label + 1
    for shape in shapes:
        inner_edge = shape.mask & _grow(~shape.mask, 1)
        values[_grow(inner_edge, BAND_WIDTH // 2)] = IGNORE_INDEX
    mask = Image.frombytes("P", (image_size, image_size), values.tobytes())
    mask.putpalette(voc_palette())
    return mask


def _coco_skeleton() -> dict[str, list]:
    categories = [
        {"id": category_id, "name": name, "supercategory": "shape"}
        for category_id, name in zip(SHAPE_CATEGORY_IDS, SHAPE_CLASSES)
    ]
    return {"images": [], "annotations": [], "categories": categories}


def _coco_annotation(shape: Shape, annotation_id: int, image_id: int) -> dict:
    x0, y0, x1, y1 = shape.box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": SHAPE_CATEGORY_IDS[shape.label],
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float(shape.mask.sum()),
        "iscrowd": 0,
        "segmentation": [shape.polygon],
    }


def _voc_xml(stem: str, image_size: int, shapes: list[Shape]) -> bytes:
    annotation = ET.Element("annotation")
    _sub(annotation, "folder", f"VOC{VOC_YEAR}")
    _sub(annotation, "filename", f"{stem}.jpg")
    _sub(_sub(annotation, "source"), "database", "gdrq_bench shapes")
    size = _sub(annotation, "size")
    for tag, value in (("width", image_size), ("height", image_size), ("depth", 3)):
        _sub(size, tag, str(value))
    _sub(annotation, "segmented", "1")
    limit = DIFFICULT_FRACTION * image_size
    for shape in shapes:
        x0, y0, x1, y1 = shape.box
        difficult = x1 - x0 < limit and y1 - y0 < limit
        item = _sub(annotation, "object")
        _sub(item, "name", SHAPE_CLASSES[shape.label])
        _sub(item, "pose", "Unspecified")
        _sub(item, "truncated", "0")
        _sub(item, "difficult", str(int(difficult)))
        box = _sub(item, "bndbox")
        # VOC's pixels are numbered from 1 and its boxes include their last pixel
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            _sub(box, tag, str(value))
    ET.indent(annotation)
    return ET.tostring(annotation, encoding="utf-8")


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = text
    return element


def _write_image_set(voc: Path, split: str, stems: list[str]) -> None:
    for task in ("Main", "Segmentation"):
        folder = voc / "ImageSets" / task
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in stems))
