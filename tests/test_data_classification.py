"""Classification data (ImageFolder checks, embedded digits), models and task."""

from __future__ import annotations

import json
import math
import re
import urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from gdrq_bench.config.errors import ConfigError, DataError
from gdrq_bench.config.schema import (
    ClassificationDatasetConfig,
    ModelConfig,
    TaskConfig,
    TrainerConfig,
)
from gdrq_bench.data import digits as digits_module
from gdrq_bench.data.bad_samples import BadSamplePolicy
from gdrq_bench.data.digits import MARKER, prepare_digits
from gdrq_bench.data.imagefolder import check_same_classes, load_imagefolder
from gdrq_bench.models.cifar_resnet import resnet20
from gdrq_bench.models.classifiers import CLASSIFIER_NAMES, build_classifier
from gdrq_bench.tasks.classification import ClassificationTask
from gdrq_bench.tasks.common import evaluation_subset

SIZE = 16


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache") / "digits"


@pytest.fixture(scope="module")
def digits_tree(digits_root: Path) -> Path:
    return prepare_digits(digits_root, SIZE)


def make_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """root/<split>/<class>/<n>.png with the given number of images per class."""
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for n in range(count):
                Image.new("L", (4, 4), color=n).save(root / split / name / f"{n}.png")
    return root


def make_task(root: Path, name: str = "digits", **dataset: object) -> ClassificationTask:
    config = ClassificationDatasetConfig(
        name=name, root=str(root), image_size=SIZE, resize=SIZE, **dataset
    )
    trainer = TrainerConfig(batch_size=32)
    return ClassificationTask(
        TaskConfig(), config, ModelConfig(), trainer, "unused", BadSamplePolicy()
    )


def test_digits_tree_is_complete_and_stratified(digits_tree: Path) -> None:
    targets = Counter(load_digits().target.tolist())
    counts = {
        split: Counter(path.parent.name for path in (digits_tree / split).glob("*/*.png"))
        for split in ("train", "val")
    }
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 1797
    assert sorted(counts["train"]) == sorted(counts["val"]) == [str(d) for d in range(10)]
    for digit, total in targets.items():
        assert counts["train"][str(digit)] + counts["val"][str(digit)] == total
        assert abs(counts["val"][str(digit)] - 0.2 * total) <= 1

    train = load_imagefolder(digits_tree, "train", None)
    val = load_imagefolder(digits_tree, "val", None)
    assert len(train) == sum(counts["train"].values()) and len(val) == 1797 - len(train)
    image, label = val[0]
    assert image.mode == "RGB" and image.size == (SIZE, SIZE) and val.classes[label] == "0"
    check_same_classes(train, val)


def test_digits_written_once_per_size(digits_root: Path, digits_tree: Path) -> None:
    marker = digits_tree / MARKER
    before = marker.stat().st_mtime_ns
    assert prepare_digits(digits_root, SIZE) == digits_tree
    assert marker.stat().st_mtime_ns == before
    other = prepare_digits(digits_root, 8)
    assert other != digits_tree
    assert Image.open(next(other.glob("val/3/*.png"))).size == (8, 8)
    assert sorted(p.name for p in digits_root.iterdir()) == sorted([digits_tree.name, other.name])


def test_digits_interrupted_write_leaves_no_tree(tmp_path: Path, monkeypatch) -> None:
    saved = []

    def failing_save(image: Image.Image, path: Path) -> None:
        if len(saved) == 100:
            raise KeyboardInterrupt
        saved.append(path)

    monkeypatch.setattr(digits_module.Image.Image, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_digits(tmp_path, SIZE)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_digits_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"{SIZE}px-seed0" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{SIZE}px-seed0 exists but is incomplete"):
        prepare_digits(tmp_path, SIZE)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=re.escape(f"dataset root {tmp_path / 'nope'} does not exist; expected")
    ):
        load_imagefolder(tmp_path / "nope", "train", None)


def test_missing_split(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"a": 1}})
    with pytest.raises(
        DataError, match=re.escape(f"split folder {tmp_path / 'val'} does not exist")
    ):
        load_imagefolder(tmp_path, "val", None)


def test_split_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "train" / "loose.png")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train'} has no class folders")):
        load_imagefolder(tmp_path, "train", None)


def test_class_folder_without_images(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"a": 2, "b": 0}})
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"1 class folder\(s\) without images \(\[b\]\)"):
        load_imagefolder(tmp_path, "train", None)


def test_class_mismatch(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"a": 1, "b": 1}, "val": {"a": 1, "c": 1}})
    train, val = (load_imagefolder(tmp_path, split, None) for split in ("train", "val"))
    with pytest.raises(DataError, match=r"only in train: \[b\]; only in val: \[c\]"):
        check_same_classes(train, val)
    with pytest.raises(DataError, match="only in train"):
        make_task(tmp_path, name="imagefolder")


def test_resnet20_shape_size_and_conv_bn_order() -> None:
    model = resnet20(num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # 269,722 for the paper's option-A net, plus 2,752 for the two 1x1 conv + BN shortcuts
    assert sum(p.numel() for p in model.parameters()) == 272_474
    leaves = [m for m in model.modules() if not list(m.children())]
    convs = [i for i, m in enumerate(leaves) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 21
    for i in convs:
        assert leaves[i].bias is None
        assert isinstance(leaves[i + 1], nn.BatchNorm2d)
        assert leaves[i + 1].num_features == leaves[i].out_channels
    relus = [m for m in leaves if isinstance(m, nn.ReLU)]
    assert len(relus) == 19 and len({id(m) for m in relus}) == 19


@pytest.mark.parametrize("name", CLASSIFIER_NAMES)
def test_build_classifier(name: str) -> None:
    model = build_classifier(name, num_classes=10, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_build_classifier_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.name=resnet99: .*resnet18, .*mobilenet_v2"):
        build_classifier("resnet99", 10, pretrained=False)
    with pytest.raises(ConfigError, match="no pretrained weights exist for resnet20"):
        build_classifier("resnet20", 10, pretrained=True)


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(images)]


def test_evaluate_top1_top5(digits_root: Path, digits_tree: Path, tmp_path: Path) -> None:
    task = make_task(digits_root)
    logits = torch.arange(10.0).repeat(4, 1)  # class 9 ranks first, class 0 last
    labels = torch.tensor([9, 7, 5, 0])  # ranks 1, 3, 5, 10
    batches = [(torch.zeros(4, 3, SIZE, SIZE), labels), (torch.zeros(2, 3, SIZE, SIZE), labels[:2])]
    model = FixedLogits(logits).train()
    # top1 hits: labels 9 and 9 of six; top5 hits: all but label 0; the cross-entropy of label
    # y is log(sum_i e^i) - y
    log_sum = math.log(sum(math.exp(i) for i in range(10)))
    nll = log_sum - (9 + 7 + 5 + 0 + 9 + 7) / 6
    expected = {"top1": 200 / 6, "top5": 500 / 6, "nll": nll}
    assert task.evaluate(model, batches) == pytest.approx(expected, rel=1e-12)
    first = {"top1": 25.0, "top5": 75.0, "nll": log_sum - (9 + 7 + 5 + 0) / 4}
    assert task.evaluate(model, batches[:1]) == pytest.approx(first, rel=1e-12)
    predictions = tmp_path / "predictions.json"
    task.evaluate(model, batches, predictions_path=predictions)
    written = json.loads(predictions.read_text())
    assert written == {"target": [9, 7, 5, 0, 9, 7], "predicted": [9] * 6}
    assert model.training


def test_task_data_and_seeded_order(digits_root: Path, digits_tree: Path) -> None:
    task = make_task(digits_root)
    assert task.num_classes == 10 and len(task.train_set) + len(task.eval_set) == 1797

    def first_labels(seed: int) -> list[int]:
        torch.manual_seed(seed)
        return next(iter(task.train_loader()))[1].tolist()

    assert first_labels(1) == first_labels(1) != first_labels(2)
    images, labels = next(iter(task.eval_loader()))
    assert images.shape == (256, 3, SIZE, SIZE) and labels[:3].tolist() == [0, 0, 0]
    model = task.build_model()
    assert model(task.model_inputs((images, labels))).shape == (256, 10)
    assert task.loss(model, (images, labels)).shape == ()


def test_task_config_errors(tmp_path: Path, digits_root: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.name=mnist"):
        make_task(digits_root, name="mnist")
    with pytest.raises(ConfigError, match=r"dataset\.preset=huge"):
        make_task(digits_root, preset="huge")
    with pytest.raises(
        DataError, match=re.escape(f"dataset root {tmp_path / 'imagenet'} does not exist")
    ):
        make_task(tmp_path / "imagenet", name="imagenet")


def test_evaluation_subset_is_random_seeded_and_the_same_every_time() -> None:
    """trainer.max_eval_batches: a fixed random subset, not the first batches of a data set
    sorted by class (ImageFolder's order), where a smoke run scored exactly 0 or 56.25."""
    labels = sorted(list(range(10)) * 30)  # 300 samples sorted by class
    dataset = [(index, label) for index, label in enumerate(labels)]
    subset = evaluation_subset(dataset, batches=2, batch_size=16)
    chosen = [dataset_index for dataset_index, _ in (subset[i] for i in range(len(subset)))]
    assert len(chosen) == 32 and chosen == sorted(chosen)
    assert len({labels[i] for i in chosen}) >= 8  # drawn across the classes
    again = evaluation_subset(dataset, batches=2, batch_size=16)
    assert [again[i][0] for i in range(len(again))] == chosen
    assert evaluation_subset(dataset, batches=None, batch_size=16) is dataset
    assert evaluation_subset(dataset, batches=100, batch_size=16) is dataset  # covers it all


def test_pretrained_weights_offline_is_one_line_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, destination: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError) as error:
        build_classifier("resnet18", 10, pretrained=True, weights_dir=tmp_path / "weights")
    message = str(error.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message and "could not be downloaded" in message
    assert str(tmp_path / "weights" / "checkpoints") in message and "TORCH_HOME" in message
    assert "Name or service not known" in message
