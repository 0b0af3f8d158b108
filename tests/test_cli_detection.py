"""End to end: gdrq-run task=detection on the embedded shapes scenes (64 px to stay cheap)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from hydra import compose, initialize_config_dir
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gdrq_bench.config.schema import register_configs
from gdrq_bench.data.shapes import (
    SHAPE_CATEGORY_IDS,
    SHAPE_CLASSES,
    coco_paths,
    prepare_shapes,
    voc_root,
)
from gdrq_bench.reporting.results import COLUMNS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SMALL = (
    "task=detection",
    "dataset.image_size=64",
    "trainer.batch_size=2",
    "trainer.eval_batch_size=8",
    "logger=none",
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _pycocotools_ap(annotation_file: Path, predictions: list[dict]) -> float:
    """Box AP straight from pycocotools, over every image of the ground truth."""
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(annotation_file))
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(predictions), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return 100.0 * evaluator.stats[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("detector", "backbone", "data_format", "metric"),
    [
        ("retinanet", "resnet18", "coco", "bbox_ap"),
        ("faster_rcnn", "mobilenet_v3_large", "voc", "map50"),
    ],
)
def test_smoke_run_per_detector_writes_one_row(
    tmp_path: Path, cache_dir: Path, detector: str, backbone: str, data_format: str, metric: str
) -> None:
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *SMALL,
        f"task.detector={detector}",
        f"model={backbone}",
        f"dataset.format={data_format}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(tmp_path, "detection")
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == COLUMNS
    assert (row["task"], row["dataset"], row["model"], row["metric"]) == (
        "detection",
        "shapes",
        backbone,
        metric,
    )
    assert float(row["fold_err"]) <= 1e-6
    assert (tmp_path / "run" / "predictions.json").is_file()


@pytest.mark.slow
def test_ssdlite_ap_is_pycocotools_ap_of_the_written_predictions(
    tmp_path: Path, cache_dir: Path
) -> None:
    """Untrained SSDlite scores every class about equally, so it makes plenty of boxes."""
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *SMALL,
        "task.detector=ssdlite",
        "model=mobilenet_v3_large",
        "trainer.max_eval_batches=null",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = read_rows(tmp_path, "detection")[0]
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert predictions
    assert {p["category_id"] for p in predictions} <= set(SHAPE_CATEGORY_IDS)
    _, annotation_file = coco_paths(prepare_shapes(cache_dir / "shapes", 64), "val")
    image_ids = {image["id"] for image in json.loads(annotation_file.read_text())["images"]}
    assert {p["image_id"] for p in predictions} <= image_ids
    assert float(row["folded"]) == pytest.approx(
        round(_pycocotools_ap(annotation_file, predictions), 4), abs=1e-4
    )


def _coco_copy(tmp_path: Path, cache_dir: Path) -> Path:
    """A COCO-layout copy of the shapes scenes to break: ROOT/val, ROOT/annotations/..."""
    tree = prepare_shapes(cache_dir / "shapes", 64)
    root = tmp_path / "coco"
    shutil.copytree(tree / "coco", root)
    return root


@pytest.mark.parametrize(
    "fault", ["malformed_annotations", "missing_key", "missing_image", "missing_root"]
)
def test_bad_coco_data_fails_with_one_line_naming_the_file(
    tmp_path: Path, cache_dir: Path, fault: str
) -> None:
    root = _coco_copy(tmp_path, cache_dir)
    annotation_file = root / "annotations" / "instances_val.json"
    if fault == "malformed_annotations":
        annotation_file.write_text(annotation_file.read_text()[:-20])
        named = annotation_file
    elif fault == "missing_key":
        data = json.loads(annotation_file.read_text())
        del data["categories"]
        annotation_file.write_text(json.dumps(data))
        named = f'{annotation_file} is not a COCO annotation file: no "categories" list'
    elif fault == "missing_image":
        named = min((root / "val").iterdir())
        named.unlink()
    else:
        shutil.rmtree(root)
        named = root
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *SMALL,
        "model=resnet18",
        "dataset=coco",
        f"dataset.root={root}",
        "dataset.train_split=val",
        "dataset.val_split=val",
    )
    assert_failed_cleanly(result, tmp_path, "detection", str(named))


@pytest.mark.parametrize("field", ["bndbox/xmin", "size/width"])
def test_voc_annotation_missing_a_field_names_file_and_field(
    tmp_path: Path, cache_dir: Path, field: str
) -> None:
    devkit = tmp_path / "VOCdevkit"
    shutil.copytree(voc_root(prepare_shapes(cache_dir / "shapes", 64)), devkit)
    voc = devkit / "VOC2007"
    stem = (voc / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{stem}.xml"
    tag = field.split("/")[1]
    xml.write_text(re.sub(rf"<{tag}>[^<]*</{tag}>", "", xml.read_text(), count=1))
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *SMALL,
        "model=resnet18",
        "dataset=voc",
        f"dataset.root={devkit}",
        "dataset.train_split=val",
        "dataset.val_split=val",
        f"dataset.classes=[{','.join(SHAPE_CLASSES)}]",
        "dataset.num_workers=0",
    )
    assert_failed_cleanly(result, tmp_path, "detection", f"{xml}: <{field}> is missing")


@pytest.mark.slow
def test_truncated_image_is_skipped_and_counted(tmp_path: Path, cache_dir: Path) -> None:
    root = _coco_copy(tmp_path, cache_dir)
    image = min((root / "val").iterdir())
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])
    coco = (
        "task.detector=ssdlite",  # the cheapest detector: this test is about the data
        "model=mobilenet_v3_large",
        "dataset=coco",
        f"dataset.root={root}",
        "dataset.train_split=val",
        "dataset.val_split=val",
        "dataset.num_workers=0",
        "trainer.max_eval_batches=null",  # every validation image, the broken one included
    )
    failed = gdrq_run(tmp_path, cache_dir, *SMALL, *coco)
    assert_failed_cleanly(failed, tmp_path, "detection", str(image))
    result = gdrq_run(tmp_path, cache_dir, *SMALL, *coco, "dataset.on_bad_sample=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = read_rows(tmp_path, "detection")
    assert row["skipped_samples"] == "1"


@pytest.mark.slow
def test_same_seed_twice_gives_the_same_row(tmp_path: Path) -> None:
    """Two runs of one command, each training its own float model: identical metrics."""
    rows = []
    for attempt in ("a", "b"):
        result = gdrq_run(
            tmp_path / attempt,
            tmp_path / f"cache-{attempt}",
            *SMALL,
            "task.detector=ssdlite",
            "model=mobilenet_v3_large",
            "seed=4",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        rows += read_rows(tmp_path / attempt, "detection")
    for metric in ("fp", "quant", "folded", "fold_err", "kurtosis_after", "ql_after"):
        assert rows[0][metric] == rows[1][metric], metric
    metrics = [json.loads((Path(row["run_dir"]) / "metrics.json").read_text()) for row in rows]
    assert metrics[0] == metrics[1]


@pytest.mark.parametrize(
    ("overrides", "k_w", "k_a"),
    [
        ([], 3.0, 1.0),
        (["task=detection"], 3.0, 1.0),
        (["task=segmentation", "method=scale_clip_only"], 3.0, 1.0),
        (["task=detection", "method.k_a=4"], 3.0, 4.0),
    ],
)
def test_every_task_takes_the_scale_clip_defaults_and_the_command_line_wins(
    overrides: list[str], k_w: float, k_a: float
) -> None:
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=overrides)
    assert (cfg.method.k_w, cfg.method.k_a) == (k_w, k_a)
    assert (cfg.method.act_stat, cfg.method.clip_style) == ("mse", "clamp")
