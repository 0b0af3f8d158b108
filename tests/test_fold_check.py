"""trainer.fold_tolerance: a fold that differs from the quantized model fails the run after
training, without losing the training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_runner import error_lines, gdrq_run_with_modules, read_rows

# a plugin that breaks the fold of one layer and prints how many inputs the check saw
BROKEN_FOLD = """
import sys

import gdrq_bench.quant.fold as fold
import gdrq_bench.run.stages as stages

original, checked = fold.fold_layer, stages.verify_fold


def broken(layer, bn):
    folded = original(layer, bn)
    if tuple(layer.weight.shape) == (32, 16, 3, 3):  # ResNet-20's layer2.0.conv1
        folded.scale.mul_(1.001)
    return folded


def counted(qmodel, folded, batches):
    print("fold check inputs:", [len(inputs) for inputs in batches], file=sys.stderr)
    return checked(qmodel, folded, batches)


fold.fold_layer, stages.verify_fold = broken, counted
"""


@pytest.mark.slow
def test_a_fold_beyond_the_tolerance_fails_the_run_and_keeps_the_training(
    tmp_path: Path,
) -> None:
    """A fold broken on purpose (one multiplier 0.1% off, from a plugin the run imports before
    it starts): the run exits non-zero with one line naming the layer, its row is written
    marked failed=fold with the error measured, the trained quantized model is kept, and no
    export is made of the broken fold. The check ran on the first trainer.fold_check_inputs
    inputs of the smoke trainer's one evaluation batch of 64."""
    result = gdrq_run_with_modules(
        tmp_path,
        {"broken_fold.py": BROKEN_FOLD},
        "plugins=[broken_fold]",
        "export=exact",
        "trainer.fold_check_inputs=48",
    )
    assert result.returncode != 0
    assert "fold check inputs: [48]" in result.stderr
    (line,) = error_lines(result)
    assert "fold check failed: max relative difference " in line
    assert "> trainer.fold_tolerance=1e-06; first differing layer layer2.0.conv1 " in line
    assert "quantized_model.pt" in line and "failed=fold" in line
    (row,) = read_rows(tmp_path)
    assert row["failed"] == "fold"
    assert float(row["fold_err"]) > 1e-6 and float(row["folded"]) >= 0
    assert row["exact_diff"] == ""  # a broken fold is not exported
    run_dir = Path(row["run_dir"])
    assert not (run_dir / "export.json").exists()
    kept = torch.load(run_dir / "quantized_model.pt")  # a state_dict: tensors only
    assert kept["layer2.0.conv1.weight"].shape == (32, 16, 3, 3)
    assert sum(name.endswith("conv1.weight") for name in kept) == 10  # the stem and 9 blocks
