"""The validation split held out of the training set (dataset.holdout, data/holdout.py)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from cli_runner import gdrq_run, read_rows
from hydra import compose, initialize_config_dir
from test_data_classification import make_task
from torch import nn
from torch.utils.data import Dataset

from gdrq_bench.config import CONFIG_DIR
from gdrq_bench.config.errors import ConfigError
from gdrq_bench.data.digits import prepare_digits
from gdrq_bench.data.holdout import holdout_indices
from gdrq_bench.run import prepare_run
from gdrq_bench.tasks import Task


def test_holdout_is_stratified_disjoint_and_fixed() -> None:
    labels = [0] * 500 + [1] * 300 + [2] * 200  # shares 50%, 30%, 20%
    kept, held = holdout_indices(labels, 101)
    assert len(held) == 101 and len(kept) == 899
    assert sorted(kept + held) == list(range(1000))  # disjoint, and every image in one
    counts = Counter(labels[i] for i in held)
    assert counts == {0: 51, 1: 30, 2: 20}  # 50.5 -> 51 by the largest remainder
    assert holdout_indices(labels, 101) == (kept, held)  # the same images every time
    assert held[:5] != [0, 1, 2, 3, 4]  # drawn, not the first images of a class


@pytest.mark.parametrize("count", [-1, 1000, 5000])
def test_a_holdout_outside_the_training_set_is_named(count: int) -> None:
    with pytest.raises(ConfigError, match=rf"^dataset\.holdout={count}: must be between 1"):
        holdout_indices([0, 1] * 500, count)


def test_held_out_images_leave_training_and_are_seen_as_evaluation_images(
    tmp_path: Path,
) -> None:
    root = tmp_path / "digits"
    prepare_digits(root, 16)
    full, task = make_task(root), make_task(root, holdout=100)
    assert len(task.train_set) + len(task.holdout_set) == len(full.train_set)
    held = set(task.holdout_set.indices)
    assert held.isdisjoint(task.train_set.indices)
    assert len(task.eval_set) == len(full.eval_set)  # the reported split is untouched
    labels = Counter(full.train_set.targets[i] for i in held)
    assert sorted(labels) == list(range(10)) and max(labels.values()) - min(labels.values()) <= 3
    # evaluation transforms: no random crop, the same tensor every time it is read
    image, label = task.holdout_set[0]
    again, _ = task.holdout_set[0]
    assert torch.equal(image, again)
    assert label == full.train_set.targets[task.holdout_set.indices[0]]
    assert len(task.holdout_loader().dataset) == 100
    assert full.holdout_loader() is None


def _scenes_held_out(tmp_path: Path, count: int, *overrides: str) -> Task:
    """The task of `overrides` with `count` training scenes held out, checked against the
    same task without: a plain draw, disjoint from training, read as evaluation scenes."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        full, held = (
            compose("config", overrides=[f"cache_dir={tmp_path}", *overrides, *extra])
            for extra in ([], [f"dataset.holdout={count}"])
        )
    everything = prepare_run(full, tmp_path / "a").task
    task = prepare_run(held, tmp_path / "b").task
    assert len(task.train_set) + len(task.holdout_set) == len(everything.train_set)
    assert set(task.holdout_set.indices).isdisjoint(task.train_set.indices)
    assert len(task.holdout_set) == count and not task.holdout_set.dataset.train
    assert task.train_set.dataset.train and everything.holdout_loader() is None
    return task


def test_segmentation_holds_out_scenes_seen_as_evaluation_scenes(tmp_path: Path) -> None:
    """Scenes hold many classes: a plain draw of the training scenes, read without the
    training crop and flip."""
    _scenes_held_out(tmp_path, 20, "task=segmentation")


class _Oracle(nn.Module):
    """A detector that finds exactly the annotated boxes of each image it was shown."""

    def __init__(self, scenes: Dataset) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # a device to be on
        self.answers = {
            image.numpy().tobytes(): {
                "boxes": target["boxes"],
                "labels": target["labels"],
                "scores": torch.ones(len(target["labels"])),
            }
            for image, target in (scenes[i] for i in range(len(scenes)))
        }

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.answers[image.cpu().numpy().tobytes()] for image in images]


@pytest.mark.parametrize(("layout", "metric"), [("coco", "bbox_ap"), ("voc", "map50")])
def test_detection_holds_out_scenes_scored_against_the_training_annotations(
    tmp_path: Path, layout: str, metric: str
) -> None:
    """A plain draw of the training scenes, read without the training flip; a detector that
    finds exactly their annotated boxes scores 100 on them, so the held-out images are
    scored against the training split's annotations (COCO's file, VOC's XML), not the
    evaluation split's."""
    task = _scenes_held_out(tmp_path, 12, "task=detection", f"dataset.format={layout}")
    oracle = _Oracle(task.holdout_set)
    assert task.evaluate(oracle, task.holdout_loader())[metric] == pytest.approx(100.0)
    # the oracle knows no evaluation image: it fails there, so scoring did read held-out ones
    with pytest.raises(KeyError):
        task.evaluate(oracle, task.eval_loader())


@pytest.mark.slow
def test_a_run_scores_both_splits_without_training_twice(tmp_path: Path) -> None:
    overrides = ["logger=none", "dataset.holdout=300"]  # smoke: one evaluation batch of 64
    result = gdrq_run(tmp_path, tmp_path / "cache", *overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    # a method of the same stage split takes the float control's two scores from the cache
    shared = gdrq_run(tmp_path, tmp_path / "cache", *overrides, "method=scale_clip_only")
    assert shared.returncode == 0, shared.stderr[-2000:]
    row, other = read_rows(tmp_path)
    assert (other["fp_ft"], other["val_fp_ft"]) == (row["fp_ft"], row["val_fp_ft"])
    # and the float model's two scores and its predictions, which the first run computed
    assert (other["fp"], other["val_fp"]) == (row["fp"], row["val_fp"])
    log = shared.stdout + shared.stderr
    for name in ("fp", "val_fp", "fp_ft", "val_fp_ft"):
        assert re.search(rf"\] - {name} model: top1 [\d.]+.* \(from .*cache", log), name
    [entry] = (tmp_path / "cache" / "fp_scores").iterdir()
    predictions = (Path(other["run_dir"]) / "predictions_fp.json").read_text()
    assert predictions == (entry / "predictions.json").read_text()
    assert len(json.loads(predictions)["predicted"]) == 64
    assert (row["eval_samples"], row["val_samples"]) == ("64", "64")  # each split's batch
    metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
    for name in ("fp", "fp_ft", "folded"):  # each model scored on both splits
        assert float(row[f"val_{name}"]) == round(metrics[f"val_{name}"]["top1"], 4)
        assert float(row[name]) == round(metrics[name]["top1"], 4)
    # whole images right out of 64: multiples of 100/64 points
    right = float(row["val_folded"]) * 64 / 100
    assert right == pytest.approx(round(right), abs=1e-3)
