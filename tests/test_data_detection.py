"""Detection data: the embedded shapes tree (COCO and VOC views) and the two loaders."""

from __future__ import annotations

import json
import logging
import re
import shutil
import xml.etree.ElementTree as ET
from math import ceil, floor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gdrq_bench.config.errors import DataError
from gdrq_bench.data import shapes as shapes_module
from gdrq_bench.data.detection import CocoDetectionSet, VocDetectionSet, collate_detection
from gdrq_bench.data.shapes import (
    MARKER,
    SHAPE_CATEGORY_IDS,
    SHAPE_CLASSES,
    coco_paths,
    prepare_shapes,
    voc_root,
)

# pycocotools' annToMask predates numpy 2's copy keyword
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 64
COUNTS = {"train_images": 12, "val_images": 6}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_shapes(tmp_path_factory.mktemp("shapes"), SIZE, **COUNTS)


def coco_set(tree: Path, split: str, train: bool) -> CocoDetectionSet:
    return CocoDetectionSet(*coco_paths(tree, split), train=train)


def voc_set(tree: Path, split: str, train: bool) -> VocDetectionSet:
    return VocDetectionSet(voc_root(tree), ["2007"], split, SHAPE_CLASSES, train=train)


def voc_objects(tree: Path, stem: str) -> list[tuple[str, bool, list[int]]]:
    """(name, difficult, [xmin, ymin, xmax, ymax]) of each object, parsed here independently."""
    root = ET.parse(voc_root(tree) / "VOC2007" / "Annotations" / f"{stem}.xml").getroot()
    return [
        (
            item.findtext("name"),
            item.findtext("difficult") == "1",
            [int(item.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")],
        )
        for item in root.iter("object")
    ]


def tree_files(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


def test_generation_is_deterministic_and_written_once(tmp_path: Path, tree: Path) -> None:
    again = prepare_shapes(tmp_path, SIZE, **COUNTS)
    assert again.name == tree.name == f"{SIZE}px-seed0-n12-6"
    assert tree_files(again) == tree_files(tree)
    before = (again / MARKER).stat().st_mtime_ns
    assert prepare_shapes(tmp_path, SIZE, **COUNTS) == again
    assert (again / MARKER).stat().st_mtime_ns == before
    other = prepare_shapes(tmp_path, SIZE, seed=1, **COUNTS)
    first = "coco/train/000001.png"
    assert (other / first).read_bytes() != (again / first).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([again.name, other.name])


def test_interrupted_write_leaves_no_tree(tmp_path: Path, monkeypatch) -> None:
    written = []

    def failing_write(*args: object) -> None:
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(args)

    monkeypatch.setattr(shapes_module, "_write_scene", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_shapes(tmp_path, SIZE, **COUNTS)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"{SIZE}px-seed0-n12-6" / "coco").mkdir(parents=True)
    with pytest.raises(DataError, match="n12-6 exists but is incomplete"):
        prepare_shapes(tmp_path, SIZE, **COUNTS)


def test_coco_files(tree: Path) -> None:
    image_ids = []
    for split, count in (("train", 12), ("val", 6)):
        image_dir, annotation_file = coco_paths(tree, split)
        data = json.loads(annotation_file.read_text())
        assert [c["id"] for c in data["categories"]] == list(SHAPE_CATEGORY_IDS)
        assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
        assert len(data["images"]) == count
        image_ids += [image["id"] for image in data["images"]]
        annotated = {a["image_id"] for a in data["annotations"]}
        assert len(annotated) < count  # some images hold no object
        coco = CocoDetectionSet(image_dir, annotation_file, train=False).coco
        for annotation in data["annotations"]:
            assert annotation["iscrowd"] == 0
            image = Image.open(image_dir / coco.imgs[annotation["image_id"]]["file_name"])
            assert image.size == (SIZE, SIZE)
            # the polygon, as pycocotools rasterises it, has exactly the box and the area
            mask = coco.annToMask(annotation)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            extent = [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]
            assert extent == annotation["bbox"] and mask.sum() == annotation["area"]
    assert sorted(image_ids) == list(range(1, 19))


def test_coco_and_voc_views_agree(tree: Path) -> None:
    coco, voc = coco_set(tree, "val", train=False), voc_set(tree, "val", train=False)
    assert coco.classes == voc.classes == list(SHAPE_CLASSES)
    assert coco.num_classes == voc.num_classes == 4
    assert coco.category_ids == list(SHAPE_CATEGORY_IDS)
    assert len(coco) == len(voc) == 6 and voc.image_ids == list(range(6))
    for index, stem in enumerate(voc.stems):
        coco_image, coco_target = coco[index]
        voc_image, voc_target = voc[index]
        assert coco_target["image_id"] == coco.image_ids[index] == int(stem)
        assert voc_target["image_id"] == index
        assert coco_image.dtype == torch.float32 and coco_image.shape == (3, SIZE, SIZE)
        assert coco_image.min() >= 0 and coco_image.max() <= 1
        assert (coco_image - voc_image).abs().mean() < 0.02  # PNG vs JPEG of one scene
        assert coco_target["boxes"].dtype == torch.float32
        assert coco_target["labels"].dtype == torch.int64
        assert torch.allclose(coco_target["boxes"], voc_target["boxes"], atol=1.0)
        assert torch.equal(coco_target["labels"], voc_target["labels"])
        assert not coco_target["difficult"].any()
        objects = voc_objects(tree, stem)
        assert [SHAPE_CLASSES[label - 1] for label in voc_target["labels"]] == [
            name for name, _, _ in objects
        ]
        annotations = coco.coco.imgToAnns[int(stem)]
        assert [coco.label_to_category(int(label)) for label in coco_target["labels"]] == [
            a["category_id"] for a in annotations
        ]
        for (_, _, voc_box), annotation in zip(objects, annotations, strict=True):
            x, y, w, h = annotation["bbox"]
            assert voc_box == [floor(x) + 1, floor(y) + 1, ceil(x + w), ceil(y + h)]


def test_voc_difficult_only_in_evaluation_targets(tree: Path) -> None:
    train, evaluation = voc_set(tree, "train", train=True), voc_set(tree, "train", train=False)
    flags = [hard for stem in train.stems for _, hard, _ in voc_objects(tree, stem)]
    assert 0 < sum(flags) < len(flags)
    hard_boxes = []
    for index in range(len(train)):
        train_target = train[index][1]
        target = evaluation[index][1]
        expected = [hard for _, hard, _ in voc_objects(tree, train.stems[index])]
        assert target["difficult"].tolist() == expected
        assert "difficult" not in train_target
        assert len(train_target["labels"]) == expected.count(False)
        hard_boxes += target["boxes"][target["difficult"]].tolist()
    for x0, y0, x1, y1 in hard_boxes:
        assert x1 - x0 < 0.2 * SIZE and y1 - y0 < 0.2 * SIZE


@pytest.mark.parametrize("kind", ["coco", "voc"])
def test_training_flip_moves_boxes(tree: Path, kind: str) -> None:
    make = coco_set if kind == "coco" else voc_set
    train, evaluation = make(tree, "train", train=True), make(tree, "train", train=False)
    index = next(i for i in range(len(evaluation)) if len(evaluation[i][1]["labels"]) > 1)
    image, target = evaluation[index]
    boxes, labels = target["boxes"][~target["difficult"]], target["labels"][~target["difficult"]]
    x0, y0, x1, y1 = boxes.unbind(1)
    flipped_boxes = torch.stack([SIZE - x1, y0, SIZE - x0, y1], dim=1)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        train_image, train_target = train[index]
        flipped = not torch.equal(train_image, image)
        seen.add(flipped)
        assert torch.equal(train_image, image.flip(-1) if flipped else image)
        assert torch.equal(train_target["boxes"], flipped_boxes if flipped else boxes)
        assert torch.equal(train_target["labels"], labels)
    assert seen == {False, True}


def test_segmentation_masks(tree: Path) -> None:
    coco = coco_set(tree, "train", train=False).coco
    folder = voc_root(tree) / "VOC2007" / "SegmentationClass"
    stems = (voc_root(tree) / "VOC2007/ImageSets/Segmentation/train.txt").read_text().split()
    assert len(stems) == 12
    for stem in stems:
        mask = Image.open(folder / f"{stem}.png")
        assert mask.mode == "P"
        palette = mask.getpalette()
        assert palette[3:6] == [128, 0, 0] and palette[765:768] == [224, 224, 192]
        values = np.array(mask)
        assert set(np.unique(values)) <= {0, 1, 2, 3, 255}
        objects = np.zeros_like(values, dtype=bool)
        for annotation in coco.imgToAnns[int(stem)]:
            label = SHAPE_CATEGORY_IDS.index(annotation["category_id"]) + 1
            mask = coco.annToMask(annotation) > 0
            assert set(np.unique(values[mask])) <= {label, 255}
            assert (values[erode(mask, 2)] == label).all()  # the band is at most 2 px deep
            assert (values[mask & ~erode(mask, 1)] == 255).all()  # and covers every edge
            objects |= mask
        assert not (np.isin(values, [1, 2, 3]) & ~objects).any()


def erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """True where the whole (2 * pixels + 1)-square around a pixel lies in the mask."""
    padded = np.pad(mask, pixels, constant_values=True)  # the image border is no edge
    h, w = mask.shape
    span = range(2 * pixels + 1)
    return np.logical_and.reduce([padded[y : y + h, x : x + w] for y in span for x in span])


def write_coco(tmp_path: Path, data: dict) -> tuple[Path, Path]:
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    for image in data.get("images", []):
        Image.new("L", (image["width"], image["height"]), 90).save(image_dir / image["file_name"])
    annotation_file = tmp_path / "instances.json"
    annotation_file.write_text(json.dumps(data))
    return image_dir, annotation_file


def small_coco() -> dict:
    def annotation(id_: int, bbox: list[float], **extra: object) -> dict:
        return {"id": id_, "image_id": 1, "category_id": 9, "bbox": bbox, "iscrowd": 0} | extra

    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 20, "height": 10},
            {"id": 4, "file_name": "b.png", "width": 8, "height": 8},
        ],
        "annotations": [
            annotation(1, [2.5, 1.0, 5.0, 4.0]),
            annotation(2, [0.0, 0.0, 20.0, 10.0], iscrowd=1),
            annotation(3, [3.0, 3.0, 0.0, 2.0]),
            annotation(4, [25.0, 2.0, 3.0, 3.0]),  # wholly right of the image: empty when clipped
            annotation(5, [15.0, -2.0, 10.0, 4.0], category_id=5),  # clipped to [15, 0, 20, 2]
        ],
        "categories": [{"id": 9, "name": "cat"}, {"id": 5, "name": "dog"}],
    }


def test_coco_drops_crowd_and_degenerate_boxes(tmp_path: Path, caplog) -> None:
    paths = write_coco(tmp_path, small_coco())
    with caplog.at_level(logging.WARNING):
        dataset = CocoDetectionSet(*paths, train=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "dropped 2 annotation(s)" in warnings[0] and str(paths[1]) in warnings[0]
    assert dataset.image_ids == [1, 4] and dataset.category_ids == [5, 9]
    assert dataset.classes == ["dog", "cat"] and dataset.num_classes == 3
    assert dataset.label_to_category(1) == 5 and dataset.label_to_category(2) == 9
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert images[0].shape == (3, 10, 20) and images[1].shape == (3, 8, 8)
    assert torch.allclose(images[0], torch.full((3, 10, 20), 90 / 255))
    assert targets[0]["boxes"].tolist() == [[2.5, 1.0, 7.5, 5.0], [15.0, 0.0, 20.0, 2.0]]
    assert targets[0]["labels"].tolist() == [2, 1] and targets[0]["image_id"] == 1
    assert targets[1]["boxes"].shape == (0, 4) and targets[1]["labels"].shape == (0,)
    assert targets[1]["difficult"].shape == (0,) and targets[1]["image_id"] == 4
    torch.manual_seed(0)
    assert len(CocoDetectionSet(*paths, train=True)[0][1]["labels"]) == 2


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: "{not json", "is not valid JSON"),
        (lambda d: {k: v for k, v in d.items() if k != "categories"}, 'no "categories" list'),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation 1 has bbox"),
        (lambda d: d["annotations"][0].update(image_id=7), "unknown image_id 7"),
        (lambda d: d["annotations"][0].update(category_id=1), "unknown category_id 1"),
    ],
)
def test_malformed_coco_annotations(tmp_path: Path, edit, problem: str) -> None:
    data = small_coco()
    edited = edit(data)
    image_dir, annotation_file = write_coco(tmp_path, data)
    if edited is not None:
        annotation_file.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    message = re.escape(str(annotation_file)) + ".*" + re.escape(problem)
    with pytest.raises(DataError, match=message):
        CocoDetectionSet(image_dir, annotation_file, train=False)


def test_coco_missing_paths(tmp_path: Path) -> None:
    image_dir, annotation_file = write_coco(tmp_path, small_coco())
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nope'} does not exist")):
        CocoDetectionSet(tmp_path / "nope", annotation_file, train=False)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'x.json'} does not exist")):
        CocoDetectionSet(image_dir, tmp_path / "x.json", train=False)
    (image_dir / "b.png").unlink()
    with pytest.raises(
        DataError, match=re.escape(f"image {image_dir / 'b.png'} does not exist (1 of the 2")
    ):
        CocoDetectionSet(image_dir, annotation_file, train=False)


@pytest.fixture
def voc_copy(tree: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(voc_root(tree), tmp_path / "VOCdevkit"))


def test_voc_errors(voc_copy: Path, tmp_path: Path) -> None:
    voc = voc_copy / "VOC2007"

    def load() -> VocDetectionSet:
        return VocDetectionSet(voc_copy, ["2007"], "val", SHAPE_CLASSES, train=False)

    assert len(load()) == 6
    with pytest.raises(DataError, match=re.escape(f"VOC root {tmp_path / 'nope'} does not exist")):
        VocDetectionSet(tmp_path / "nope", ["2007"], "val", SHAPE_CLASSES, train=False)
    with pytest.raises(DataError, match=re.escape(str(voc / "ImageSets/Main/test.txt"))):
        VocDetectionSet(voc_copy, ["2007"], "test", SHAPE_CLASSES, train=False)
    with pytest.raises(DataError, match=re.escape(f"{voc_copy / 'VOC2012'}")):
        VocDetectionSet(voc_copy, ["2007", "2012"], "val", SHAPE_CLASSES, train=False)

    first, *others = load().stems
    stem = next(s for s in others if "<name>" in (voc / "Annotations" / f"{s}.xml").read_text())
    (voc / "JPEGImages" / f"{first}.jpg").unlink()
    with pytest.raises(DataError, match=re.escape(f"VOC image {voc / 'JPEGImages' / first}.jpg")):
        load()

    (voc / "ImageSets/Main/val.txt").write_text(f"{stem}\n")
    xml = voc / "Annotations" / f"{stem}.xml"
    text = xml.read_text()
    xml.write_text(text.replace("</annotation>", ""))
    with pytest.raises(DataError, match=re.escape(f"{xml} is not valid XML")):
        load()
    xml.write_text(text.replace("<name>", "<name>big", 1))
    with pytest.raises(DataError, match=re.escape(f"{xml}: object class 'big")):
        load()
    xml.unlink()
    with pytest.raises(DataError, match=re.escape(f"VOC annotation {xml} does not exist")):
        load()
