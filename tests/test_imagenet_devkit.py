"""dataset=imagenet in torchvision's layout: training class folders, a flat validation folder
and the devkit archive that labels it (data/imagenet_devkit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from imagenet_files import write_devkit, write_imagenet

from gdrq_bench.config.errors import DataError
from gdrq_bench.data.imagenet_devkit import FlatValidationSet, validation_wnids

IMAGENET = (
    "dataset=imagenet",
    "model=resnet18",
    "dataset.image_size=32",
    "dataset.resize=36",
    "dataset.num_workers=0",
    "trainer.schedule=ptq",
    "trainer.calibrate.batches=1",
    "trainer.batch_size=4",
    "logger=none",
)


def test_the_flat_validation_folder_takes_the_devkits_classes(tmp_path: Path) -> None:
    """Image i (file-name order) gets the class of the ground truth's line i, numbered as
    the sorted WNIDs (the training folders' ImageFolder indices)."""
    expected = write_imagenet(tmp_path)
    wnids = validation_wnids(tmp_path, tmp_path / "val")
    validation = FlatValidationSet(tmp_path / "val", wnids, transform=None)
    assert validation.classes == sorted(path.name for path in (tmp_path / "train").iterdir())
    assert validation.targets == expected
    image, label = validation[0]
    assert image.size == (48, 40) and label == expected[0]


@pytest.mark.slow
def test_ptq_runs_end_to_end_on_the_devkit_layout(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    root.mkdir()
    write_imagenet(root)
    result = gdrq_run(tmp_path, tmp_path / "cache", *IMAGENET, f"dataset.root={root}")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = read_rows(tmp_path)
    assert (row["dataset"], row["model"], row["schedule"]) == ("imagenet", "resnet18", "ptq")
    assert row["eval_samples"] == "6" and float(row["fold_err"]) <= 1e-6


@pytest.mark.slow
def test_a_missing_devkit_is_named_in_one_line_and_no_row(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    root.mkdir()
    write_imagenet(root)
    (root / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    result = gdrq_run(tmp_path, tmp_path / "cache", *IMAGENET, f"dataset.root={root}")
    assert_failed_cleanly(
        result, tmp_path, "classification", "ILSVRC2012_devkit_t12.tar.gz is missing"
    )


def test_a_malformed_ground_truth_line_is_named(tmp_path: Path) -> None:
    """The same DataError reaches the command line as one line (the test above)."""
    write_imagenet(tmp_path)
    write_devkit(tmp_path, "1\nx7\n3\n1\n2\n3\n")
    named = "ILSVRC2012_validation_ground_truth.txt line 2: 'x7' is not a class index"
    with pytest.raises(DataError, match=named):
        validation_wnids(tmp_path, tmp_path / "val")


def test_a_validation_folder_that_disagrees_with_the_ground_truth_is_refused(
    tmp_path: Path,
) -> None:
    write_imagenet(tmp_path)
    wnids = validation_wnids(tmp_path, tmp_path / "val")
    with pytest.raises(DataError, match="holds 6 images but the devkit's ground truth lists 5"):
        FlatValidationSet(tmp_path / "val", wnids[:5], transform=None)
