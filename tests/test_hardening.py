"""Bad input and faults through gdrq-run itself: one error line naming what to fix, a non-zero
exit, no results row; unreadable images skipped and counted when asked to. The checks that need
no run (a checkpoint file, the output directories) are called in-process."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from hydra import compose, initialize_config_dir

from gdrq_bench.config import CONFIG_DIR
from gdrq_bench.config.errors import ConfigError, GdrqError
from gdrq_bench.data.digits import prepare_digits
from gdrq_bench.models.cifar_resnet import resnet20
from gdrq_bench.run import prepare_run
from gdrq_bench.run.fp import load_checkpoint

# The digits tree as a user's ImageFolder data set, at the size the smoke trainer expects.
FOLDER = (
    "dataset=imagefolder",
    "dataset.image_size=32",
    "dataset.resize=32",
    "dataset.preset=small",
    "dataset.num_workers=0",
    "logger=none",
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tree(tmp_path: Path, cache_dir: Path) -> Path:
    """A small copy of the digits ImageFolder tree (4 images per class and split), which a
    test may break: every image is read in the first epoch."""
    copy = tmp_path / "digits"
    shutil.copytree(prepare_digits(cache_dir / "digits", 32), copy)
    for class_dir in copy.glob("*/*"):
        for image in sorted(class_dir.iterdir())[4:]:
            image.unlink()
    return copy


def _first_image(tree: Path, split: str) -> Path:
    return min(min((tree / split).iterdir()).iterdir())


def _truncate(image: Path) -> None:
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])


@pytest.mark.parametrize(("fault", "workers"), [("garbage", 0), ("truncated", 0), ("garbage", 1)])
def test_unreadable_image_fails_by_default_naming_the_file(
    tmp_path: Path, cache_dir: Path, tree: Path, fault: str, workers: int
) -> None:
    """One line, also when a loader worker process met the image (torch reports that as
    "Caught ... in DataLoader worker process 0" and a traceback)."""
    image = _first_image(tree, "train")
    if fault == "garbage":
        image.write_bytes(b"not an image")
    else:
        _truncate(image)
    overrides = (*FOLDER, f"dataset.num_workers={workers}", f"dataset.root={tree}")
    result = gdrq_run(tmp_path, cache_dir, *overrides)
    assert_failed_cleanly(result, tmp_path, "classification", str(image))
    assert "dataset.on_bad_sample=skip" in result.stderr
    assert "worker process" not in result.stderr and "Traceback" not in result.stderr
    assert f"cannot read image {image}" in (tmp_path / "run" / "gdrq_run.log").read_text()


@pytest.mark.slow
def test_skip_leaves_unreadable_images_out_and_counts_them(
    tmp_path: Path, cache_dir: Path, tree: Path
) -> None:
    broken = [_first_image(tree, "train"), _first_image(tree, "val")]
    broken[0].write_bytes(b"not an image")
    _truncate(broken[1])
    result = gdrq_run(
        tmp_path,
        cache_dir,
        *FOLDER,
        f"dataset.root={tree}",
        "dataset.on_bad_sample=skip",
        "dataset.num_workers=2",  # worker processes record what they skip too
    )
    assert result.returncode == 0, result.stderr[-2000:]
    [row] = read_rows(tmp_path)
    assert row["skipped_samples"] == "2"
    log = (Path(row["run_dir"]) / "skipped_samples.txt").read_text()
    assert {str(path) for path in broken} <= {
        line.split(": ")[0].removeprefix("cannot read image ") for line in log.splitlines()
    }


def test_class_folders_that_differ_between_splits_are_named(
    tmp_path: Path, cache_dir: Path, tree: Path
) -> None:
    (tree / "val" / "3").rename(tree / "val" / "three")
    result = gdrq_run(tmp_path, cache_dir, *FOLDER, f"dataset.root={tree}")
    assert_failed_cleanly(result, tmp_path, "classification", "only in val: [three]")


@pytest.mark.parametrize("layout", ["empty_root", "no_val_split"])
def test_empty_root_or_missing_split_names_the_folder(
    tmp_path: Path, cache_dir: Path, tree: Path, layout: str
) -> None:
    if layout == "empty_root":
        shutil.rmtree(tree)
        tree.mkdir()
        missing = tree / "train"
    else:
        missing = tree / "val"
        shutil.rmtree(missing)
    result = gdrq_run(tmp_path, cache_dir, *FOLDER, f"dataset.root={tree}")
    assert_failed_cleanly(result, tmp_path, "classification", f"{missing} does not exist")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model=resnet21", "model=resnet21 is unknown; valid: mobilenet_v2"),
        ("method=gdrqq", "method=gdrqq is unknown; valid: brevitas, dorefa"),
        ("grouping=g3", "grouping=g3 is unknown"),
        ("bits=9", "bits=9 is unknown; valid: 2, 3, 32"),
        ("trainer.epochs=3", "Key 'epochs' not in 'TrainerConfig'"),
        ("trainer.fp.epochs=two", "trainer.fp.epochs=two"),
        ("bit=4", "Key 'bit' not in 'Config'; did you mean bits?"),
        ("+bit=2", "+bit=2 adds the key 'bit', which nothing reads; did you mean bits?"),
        ("+trainer.epoch=3", "+trainer.epoch=3 adds the key 'trainer.epoch'"),
        ("+unknown=1", "+unknown=1 adds the key 'unknown', which nothing reads"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, cache_dir: Path, override: str, named: str
) -> None:
    result = gdrq_run(tmp_path, cache_dir, override)
    assert_failed_cleanly(result, tmp_path, "classification", named)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("bits.a=1", "bits.a=1"),
        ("grouping.groups=-2", "grouping.groups=-2"),
        ("grouping.groups=32", "grouping.groups=32 is more than the 16 filters of layer"),
        ("method.k_a=0", "method.k_a=0.0 must be > 0"),
        ("method.k_w=-1", "method.k_w=-1.0 must be > 0"),
        ("dataset.on_bad_sample=ignore", "dataset.on_bad_sample=ignore"),
        ("trainer.fold_check_inputs=0", "trainer.fold_check_inputs=0 must be >= 1"),
        ("trainer.fold_check_batches=0", "trainer.fold_check_batches=0 must be >= 1"),
    ],
)
def test_bad_value_is_refused_before_training_naming_the_key(
    tmp_path: Path, cache_dir: Path, override: str, named: str
) -> None:
    """In-process: prepare_run's checks (gdrq-run prints the error as the test above shows)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"cache_dir={cache_dir}", override])
    with pytest.raises(ConfigError, match=f"^{re.escape(named)}"):
        prepare_run(cfg, tmp_path)


def _checkpoint(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A model.checkpoint file of `kind` and what the error must say about it."""
    path = tmp_path / f"{kind}.pt"
    if kind == "missing":
        return path, f"model.checkpoint={path} does not exist"
    if kind == "not_torch":
        path.write_text("weights, honestly")
        return path, f"model.checkpoint={path} is not a PyTorch state_dict file"
    if kind == "other_architecture":  # resnet18's names: nothing fits resnet20
        from torchvision.models import resnet18

        torch.save(resnet18(num_classes=10).state_dict(), path)
        return path, "missing keys ['layer1.2.conv1.weight'"
    torch.save(resnet20(num_classes=7).state_dict(), path)  # same names, a 7-class head
    return path, "other shapes: fc.weight (7, 64) in the file, (10, 64) in the model"


@pytest.mark.parametrize("kind", ["missing", "not_torch", "other_architecture", "other_head"])
def test_bad_checkpoint_names_the_file_and_what_does_not_fit(tmp_path: Path, kind: str) -> None:
    """In-process: the fp stage's checkpoint loader (gdrq-run prints its GdrqError as one line,
    as the tests above show)."""
    path, named = _checkpoint(tmp_path, kind)
    with pytest.raises(GdrqError, match=re.escape(named)) as caught:
        load_checkpoint(resnet20(num_classes=10), str(path), "resnet20")
    assert "\n" not in str(caught.value)
    if kind == "other_architecture":
        assert "unexpected keys ['layer2.0.downsample.0.weight'" in str(caught.value)


def test_nan_loss_names_the_stage_and_step(tmp_path: Path, cache_dir: Path) -> None:
    result = gdrq_run(tmp_path, cache_dir, "logger=none", "trainer.fp.lr=1e30", "seed=11")
    assert_failed_cleanly(result, tmp_path, "classification", "stage 'fp': loss is nan")
    assert "step" in result.stderr


@pytest.mark.parametrize("fault", ["a_file_in_the_way", "no_free_space"])
def test_output_directory_problems_are_reported_before_training(tmp_path: Path, fault: str) -> None:
    """In-process: prepare_run, the checks gdrq-run makes before it builds the task."""
    if fault == "a_file_in_the_way":
        blocker = tmp_path / "blocker"
        blocker.write_text("")
        overrides, named = [f"results_dir={blocker / 'results'}"], "is not writable"
    else:
        overrides, named = ["min_free_mb=1000000000"], "less than min_free_mb=1000000000"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"cache_dir={tmp_path / 'cache'}", *overrides])
    with pytest.raises(ConfigError, match=named):
        prepare_run(cfg, tmp_path / "run")
