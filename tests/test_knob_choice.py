"""A choosing preset's rule, applied by code: the value it picks from validation scores."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import accuracy
from knob_choice import KnobRule, choice_text, chosen

RANGE = KnobRule("trainer.calibrate.act_range", "act_range", "max")


def _score(table: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(table, orient="index", columns=["resnet20", "mobilenet_v2"])


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # higher on one network only: the default stays
        ({"max": (90.0, 80.0), "mse": (91.0, 79.0), "percentile": (89.0, 85.0)}, "max"),
        # one value higher on both
        ({"max": (90.0, 80.0), "mse": (91.0, 81.0), "percentile": (89.0, 85.0)}, "mse"),
        # two higher on both: the higher mean of the two networks' scores (86.75 > 86.25)
        ({"max": (90.0, 80.0), "mse": (92.0, 80.5), "percentile": (90.5, 83.0)}, "percentile"),
        # equal is not higher
        ({"max": (90.0, 80.0), "mse": (90.0, 81.0)}, "max"),
        # no rows on one network: not higher there
        ({"max": (90.0, 80.0), "mse": (91.0, float("nan"))}, "max"),
    ],
)
def test_a_value_replaces_the_default_only_where_higher_on_every_network(
    table: dict[str, tuple[float, float]], expected: str
) -> None:
    assert chosen(_score(table), "max") == expected


def test_the_preset_table_prints_the_means_and_the_value_its_rows_choose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`accuracy.py table` of a choosing preset: per value and network, the mean validation
    top1 of its quantized rows (float rows left out) and the pick. mse: resnet20 (91 + 93) / 2
    = 92.00 > max's 90.00, mobilenet 81.00 > 80.00; percentile is lower on resnet20."""
    runs = [
        ("resnet20", 32, "max", 99.0),
        ("resnet20", 4, "max", 90.0),
        ("resnet20", 4, "mse", 91.0),
        ("resnet20", 8, "mse", 93.0),
        ("resnet20", 4, "percentile 99.99", 89.0),
        ("mobilenet_v2", 4, "max", 80.0),
        ("mobilenet_v2", 4, "mse", 81.0),
        ("mobilenet_v2", 4, "percentile 99.99", 85.0),
    ]
    frame = pd.DataFrame(
        [
            {
                "dataset": "fashion_mnist",
                "model": model,
                "method": "minmax",
                "w_bits": bits,
                "a_bits": bits,
                "seed": 0,
                "schedule": "ptq",
                "act_range": act_range,
                "rounding": "nearest",
                "val_folded": val,
                "val_samples": 5000,
                "spec_hash": f"{model}{bits}{act_range}",
                "command": f"gdrq-run model={model} bits={bits} act_range={act_range}",
            }
            for model, bits, act_range, val in runs
        ]
    )
    frame.to_csv(tmp_path / accuracy.CLASSIFICATION, index=False)
    monkeypatch.setattr(accuracy, "tables", lambda *args: None)  # the validation tables
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        accuracy.main(["table", "--preset", "bench_fashion_ptq_range", "--results", str(tmp_path)])
    text = out.getvalue()
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    header = [cell.strip() for cell in text.splitlines()[2].strip("|").split("|")]
    assert header[1:] == ["mobilenet_v2", "resnet20"]
    assert lines["mse"] == "| mse | 81.00 (1) | 92.00 (2) |"
    assert lines["max"] == "| max | 80.00 (1) | 90.00 (1) |"
    assert lines["percentile 99.99"] == "| percentile 99.99 | 85.00 (1) | 89.00 (1) |"
    assert text.rstrip().endswith("`trainer.calibrate.act_range=mse`.")


def test_the_override_picked_leaves_the_values_parameter_out() -> None:
    """The results column records `percentile 99.99` (the range and its percentile); the pick
    is the override's value, `percentile`."""
    rows = pd.DataFrame(
        {
            "model": ["resnet20", "resnet20", "mobilenet_v2", "mobilenet_v2"],
            "bits": "W4A4",
            "act_range": ["max", "percentile 99.99"] * 2,
            "val_folded": [90.0, 91.0, 80.0, 82.0],
        }
    )
    assert choice_text(rows, RANGE).endswith("`trainer.calibrate.act_range=percentile`.")
