"""End to end: gdrq-run task=segmentation on the embedded shapes scenes (32 px to stay cheap),
and the fold proved on each head's logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from hydra import compose, initialize_config_dir
from PIL import Image

from gdrq_bench.config import CONFIG_DIR
from gdrq_bench.config.errors import ConfigError
from gdrq_bench.data.shapes import prepare_shapes, voc_root
from gdrq_bench.models.segmenters import build_segmenter, segmenter_scope
from gdrq_bench.quant import QuantSpec, fold_model, quantize_model, verify_fold
from gdrq_bench.reporting.results import COLUMNS
from gdrq_bench.run.task import build_task

SMALL = (
    "task=segmentation",
    "dataset.image_size=32",
    "trainer.batch_size=2",
    "trainer.eval_batch_size=8",
    "logger=none",
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize(
    # MobileNetV3 backbones: a ResNet-50 one (the only kind FCN takes) costs ~60 s more here,
    # mostly the QL_2 search of the weight statistics; FCN's fold is tested below.
    ("head", "backbone", "aux"),
    [("deeplabv3", "mobilenet_v3_large", True), ("lraspp", "mobilenet_v3_large", False)],
)
def test_smoke_run_per_head_writes_one_row(
    tmp_path: Path, cache_dir: Path, head: str, backbone: str, aux: bool
) -> None:
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *SMALL,
        f"task.head={head}",
        f"model={backbone}",
        f"task.aux_loss={str(aux).lower()}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(tmp_path, "segmentation")
    assert len(rows) == 1
    row = rows[0]
    assert list(row) == COLUMNS
    assert (row["task"], row["dataset"], row["model"], row["metric"]) == (
        "segmentation",
        "shapes",
        backbone,
        "miou",
    )
    assert float(row["fold_err"]) <= 1e-6
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    classes = ["background", "circle", "square", "triangle"]
    assert set(metrics["folded"]) == {"miou", "pixel_acc", *(f"iou_{c}" for c in classes)}
    assert float(row["folded"]) == pytest.approx(round(metrics["folded"]["miou"], 4))


def _voc_copy(tmp_path: Path, cache_dir: Path) -> Path:
    root = tmp_path / "VOCdevkit"
    shutil.copytree(voc_root(prepare_shapes(cache_dir / "shapes", 32)), root)
    return root


VOC_SHAPES = (
    "dataset=voc_seg",
    "dataset.years=[2007]",
    "dataset.classes=[background,circle,square,triangle]",
    "dataset.crop_size=null",
)


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_unreadable_images_fail_or_are_skipped_and_counted(
    tmp_path: Path, cache_dir: Path, policy: str
) -> None:
    root = _voc_copy(tmp_path, cache_dir)
    voc = root / "VOC2007"
    images = []
    for split in ("train", "val"):
        stem = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[0]
        images.append(voc / "JPEGImages" / f"{stem}.jpg")
    images[0].write_bytes(b"no pixels here")  # found when the set is listed
    images[1].write_bytes(images[1].read_bytes()[:200])  # found when its pixels are decoded
    overrides = (
        *SMALL,
        *VOC_SHAPES,
        "task.head=lraspp",  # the cheapest segmenter: this test is about the data
        "model=mobilenet_v3_large",
        f"dataset.root={root}",
        f"dataset.on_bad_sample={policy}",
    )
    result = gdrq_run(tmp_path, cache_dir, *overrides)
    if policy == "fail":
        assert_failed_cleanly(result, tmp_path, "segmentation", str(images[0]))
        return
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = read_rows(tmp_path, "segmentation")
    assert row["skipped_samples"] == "2"


@pytest.mark.parametrize("fault", ["mask_size", "palette_index"])
def test_bad_mask_fails_with_one_line_naming_the_file(
    tmp_path: Path, cache_dir: Path, fault: str
) -> None:
    root = _voc_copy(tmp_path, cache_dir)
    voc = root / "VOC2007"
    stem = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    mask_file = voc / "SegmentationClass" / f"{stem}.png"
    with Image.open(mask_file) as mask:
        palette = mask.getpalette()
        values = np.array(mask)
    if fault == "mask_size":
        values = np.zeros((values.shape[0] + 3, values.shape[1]), dtype=np.uint8)
    else:
        values[0, 0] = 9  # the shapes scenes have classes 0..3
    broken = Image.fromarray(values, mode="P")
    broken.putpalette(palette)
    broken.save(mask_file)
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *SMALL,
        "dataset=voc_seg",
        f"dataset.root={root}",
        "dataset.years=[2007]",
        "dataset.classes=[background,circle,square,triangle]",
        "dataset.crop_size=null",
    )
    assert_failed_cleanly(result, tmp_path, "segmentation", str(mask_file))


@pytest.mark.parametrize(
    ("head", "backbone"),
    [("deeplabv3", "resnet50"), ("fcn", "resnet50"), ("lraspp", "mobilenet_v3_large")],
)
def test_fold_is_exact_on_the_logits_at_w4a4(head: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = build_segmenter(head, backbone, 4, head != "lraspp", False, Path("-"))
    spec = QuantSpec(w_bits=4, a_bits=4, groups=4)
    qmodel = quantize_model(model, spec, segmenter_scope(head))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # train-mode passes calibrate BN statistics and activation clips
        for _ in range(2):
            qmodel.train()(images)
    qmodel.eval()
    check = verify_fold(qmodel, fold_model(qmodel), [images])
    assert check["max_rel"] <= 1e-6


def test_wrong_task_for_the_dataset_names_the_key(tmp_path: Path, cache_dir: Path) -> None:
    """In-process: building the task refuses a data set preset of another task."""
    overrides = [*SMALL, "dataset=shapes", f"cache_dir={cache_dir}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    named = "dataset.name=shapes is not a segmentation data set; task=segmentation takes "
    named += "dataset= one of shapes_seg, voc_seg"
    with pytest.raises(ConfigError, match=f"^{named}$"):
        build_task(cfg, tmp_path)
