"""The benchmark scripts' own logic: the Brevitas grid, the accuracy tables, the Brevitas copy."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import accuracy


def test_brevitas_runs_repeat_the_preset_grids_without_the_method() -> None:
    commands = accuracy.brevitas_commands(jobs=2)
    runs = sorted(tuple(arg for arg in c if arg.startswith(("bits=", "seed="))) for c in commands)
    expected = [
        (f"bits={bits}", f"seed={seed}") for bits in ("8", "4", "3", "w2a4") for seed in (0, 1, 2)
    ]
    assert runs == sorted(expected)
    for command in commands:
        assert command[1].endswith("brevitas_qat.py")
        assert "fp_seed=0" in command and "results_dir=bench/results" in command
        assert not any(arg.startswith("method=") for arg in command)
        assert any(arg.startswith("trainer.threads=") for arg in command)


def _rows(tmp_path: Path) -> Path:
    """A results table: gdrq at W4A4 with three seeds (and a stale repeat of seed 0),
    Brevitas at W4A4 (no folded model) and minmax at W8A8."""
    rows = [
        ("gdrq", 4, 4, 0, 99.0, 50.0, 50.0),  # stale: replaced by the next seed-0 row
        ("gdrq", 4, 4, 0, 99.0, 98.0, 97.5),
        ("gdrq", 4, 4, 1, 99.0, 97.0, 96.5),
        ("gdrq", 4, 4, 2, 99.0, 96.0, 95.0),
        ("brevitas", 4, 4, 0, 99.0, 98.5, None),
        ("minmax", 8, 8, 0, 99.0, 99.0, 99.0),
    ]
    frame = pd.DataFrame(
        rows, columns=["method", "w_bits", "a_bits", "seed", "fp", "quant", "folded"]
    )
    frame["drop"] = frame.fp - frame.folded.fillna(frame.quant)
    frame["train_s"] = 60.0
    path = tmp_path / "classification.csv"
    frame.to_csv(path, index=False)
    return path


def test_accuracy_table_keeps_the_latest_row_and_gives_mean_and_spread(tmp_path: Path) -> None:
    rows = accuracy.latest_rows(_rows(tmp_path))
    table = accuracy.accuracy_table(rows).splitlines()
    assert [line.split(" | ")[0:2] for line in table[2:]] == [
        ["| W8A8", "minmax"],
        ["| W4A4", "gdrq"],
        ["| W4A4", "brevitas"],
    ]
    folded = [97.5, 96.5, 95.0]
    gdrq = table[3]
    expected = f"{statistics.mean(folded):.2f} ± {statistics.stdev(folded):.2f} (3)"
    assert gdrq.split(" | ")[5] == expected
    assert gdrq.split(" | ")[2] == "0,1,2"
    assert table[4].split(" | ")[5] == "—"  # Brevitas has no folded model
    deployed = accuracy.deployed_table(rows)
    assert "| brevitas | — | 98.50 (1) |" in deployed  # its quantized model is the deployed one
    assert f"| gdrq | — | {statistics.mean(folded):.2f} (2) |" in deployed


def test_brevitas_copy_follows_the_first_last_policy() -> None:
    pytest.importorskip("brevitas", reason="Brevitas is in the bench extra")
    from brevitas import nn as qnn
    from brevitas_models import brevitas_copy, calibrate

    from gdrq_bench.models.cifar_resnet import resnet20

    torch.manual_seed(0)
    model = resnet20(num_classes=10).eval()
    qmodel = brevitas_copy(model, w_bits=2, a_bits=4)
    convs = [m for m in qmodel.modules() if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    assert len(convs) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    bits = [int(layer.quant_weight().bit_width) for layer in convs]
    assert bits[0] == bits[-1] == 8 and set(bits[1:-1]) == {2}
    relus = [m for m in qmodel.modules() if isinstance(m, qnn.QuantReLU)]
    assert len(relus) == sum(type(m) is nn.ReLU for m in model.modules()) - 1
    images = torch.randn(8, 3, 32, 32)
    calibrate(qmodel, [images])
    with torch.no_grad():
        assert qmodel.eval()(images).shape == (8, 10)
    assert any(type(m) is nn.ReLU for m in model.modules())  # the float model is untouched
