"""gdrq-board on hand-made results tables: which rows the leaderboard keeps, the filters, the
plots it writes, and the errors it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdrq_bench.board import build_board, main
from gdrq_bench.board.leaderboard import best_rows, read_results, select
from gdrq_bench.results import COLUMNS, append_row


def _row(**values: object) -> dict[str, object]:
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        task="classification",
        dataset="digits",
        model="resnet20",
        method="gdrq",
        w_bits=4,
        a_bits=4,
        groups=4,
        metric="top1",
        fp=99.0,
        finished_at="2026-01-01T00:00:00",
    )
    row.update(values)
    row["drop"] = round(float(row["fp"]) - float(row["folded"]), 4)
    row.setdefault("command", "")
    if not row["command"]:
        row["command"] = f"gdrq-run method={row['method']} bits={row['w_bits']} x={row['folded']}"
    return row


@pytest.fixture
def results(tmp_path: Path) -> Path:
    table = tmp_path / "results" / "classification.csv"
    rows = [
        _row(folded=97.0, kurtosis_before=3.0, kurtosis_after=2.1),
        _row(folded=98.0, kurtosis_before=3.0, kurtosis_after=2.0),  # same config, better
        _row(folded=96.0, groups=1, kurtosis_before=3.0, kurtosis_after=2.2),
        _row(method="minmax", folded=98.5, groups=1),
        _row(method="minmax", folded=90.0, groups=1, w_bits=2),
        _row(method="gdrq", folded=95.0, w_bits=2),
        _row(method="gdrq", w_bits=32, a_bits=32, folded=99.0),
    ]
    for row in rows:
        append_row(table, row)
    return table.parent


def test_best_row_per_configuration_widest_bits_first(results: Path) -> None:
    best = best_rows(read_results(results))
    lines = list(zip(best.bits, best.method, best.groups, best.folded, best.runs))
    assert lines == [
        ("W32A32", "float", "-", 99.0, 1),
        ("W4A4", "minmax", "1", 98.5, 1),
        ("W4A4", "gdrq", "4", 98.0, 2),
        ("W4A4", "gdrq", "1", 96.0, 1),
        ("W2A4", "gdrq", "4", 95.0, 1),
        ("W2A4", "minmax", "1", 90.0, 1),
    ]


def test_filters_keep_only_the_chosen_rows(results: Path) -> None:
    rows = select(read_results(results), method=["minmax"], model=None)
    assert set(rows.method) == {"minmax"} and len(rows) == 2


def test_board_writes_the_leaderboard_and_the_plots(results: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    histogram = {"counts": [1.0, 3.0, 1.0], "edges": [-1.0, -0.3, 0.3, 1.0]}
    layer = {"kurtosis": 2.5, "ql2": 0.1, "bits": 4.0, "histogram": histogram}
    stats = {phase: {"conv1": layer, "layer1.conv": layer} for phase in ("before", "after")}
    (run_dir / "layer_stats.json").write_text(json.dumps(stats))
    append_row(
        results / "classification.csv",
        _row(folded=91.0, kurtosis_before=3.0, kurtosis_after=2.0, run_dir=str(run_dir)),
    )
    written = build_board(results, results, layer="conv1")
    names = sorted(path.name for path in written)
    assert names == [
        "classification_kurtosis.png",
        "classification_score_vs_bits.png",
        "classification_weight_histogram.png",
        "leaderboard.md",
    ]
    text = (results / "leaderboard.md").read_text()
    assert (
        "| W4A4 | gdrq | 4 | 99.00 | 98.00 | 1.00 | 3 | `gdrq-run method=gdrq bits=4 x=98.0` |"
        in text
    )
    assert "x=97.0" not in text  # a worse row of the same configuration
    with pytest.raises(ValueError, match="layer 'nope' is not quantized"):
        build_board(results, results, layer="nope")


def test_a_table_of_another_schema_is_named(tmp_path: Path) -> None:
    (tmp_path / "detection.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match=r"detection\.csv is not a results table"):
        main(["--results", str(tmp_path)])


def test_filters_that_match_nothing_say_so(results: Path) -> None:
    with pytest.raises(SystemExit, match="no results row matches the filters"):
        main(["--results", str(results), "--model", "resnet50"])
