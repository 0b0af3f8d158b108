"""gdrq-board on hand-made results tables: which rows the leaderboard keeps, the filters, the
plots it writes, and the errors it names."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from gdrq_bench.board import build_board, main
from gdrq_bench.board.leaderboard import aggregate, read_results, select
from gdrq_bench.reporting.results import COLUMNS, append_row, table_path

REPO = Path(__file__).resolve().parent.parent


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
        group_strategy="sorted",
        metric="top1",
        fp=99.0,
        finished_at="2026-01-01T00:00:00",
        git_sha="abc123",
        fp_hash="f1",
        eval_samples=360,
        seed=0,
    )
    row.update(values)
    row["drop"] = round(float(row["fp"]) - float(row["folded"]), 4)
    if not row["command"]:
        row["command"] = f"gdrq-run method={row['method']} bits={row['w_bits']} seed={row['seed']}"
    return row


@pytest.fixture
def results(tmp_path: Path) -> Path:
    table = tmp_path / "results" / "classification.csv"
    rows = [
        _row(folded=97.0, kurtosis_before=3.0, kurtosis_after=2.1, fp_ft=98.5, drop_ft=1.5),
        # its second seed
        _row(folded=98.0, seed=1, kurtosis_before=3.0, kurtosis_after=2.0, fp_ft=98.5, drop_ft=0.5),
        _row(folded=99.5, seed=2, git_sha="abc123-dirty"),  # uncommitted code: left out
        _row(folded=99.9, seed=3, failed="export"),  # failed after training: not read
        _row(folded=90.0, seed=2, fp_hash="f2", fp=95.0),  # another float model: its own line
        _row(folded=96.0, groups=1, command="gdrq-run grouping=none bits=4"),
        _row(method="minmax", folded=98.5, groups=1, group_strategy=""),
        _row(method="minmax", folded=90.0, groups=1, group_strategy="", w_bits=2),
        _row(method="gdrq", folded=95.0, w_bits=2),
        _row(method="gdrq", w_bits=32, a_bits=32, folded=99.0),
    ]
    for row in rows:
        append_row(table, row)
    return table.parent


def test_leaderboard_averages_the_seeds_of_each_configuration(results: Path) -> None:
    lines = aggregate(read_results(results))
    shown = list(
        zip(lines.bits, lines.method, lines.groups, lines.folded, lines.runs, lines.float_model)
    )
    assert shown == [
        ("W32A32", "float", "-", 99.0, 1, "f1"),
        ("W4A4", "minmax", "1", 98.5, 1, "f1"),
        ("W4A4", "gdrq", "4", 97.5, 2, "f1"),  # seeds 0 and 1 of one command, not the best
        ("W4A4", "gdrq", "1", 96.0, 1, "f1"),
        ("W4A4", "gdrq", "4", 90.0, 1, "f2"),
        ("W2A4", "gdrq", "4", 95.0, 1, "f1"),
        ("W2A4", "minmax", "1", 90.0, 1, "f1"),
    ]
    two_seeds = lines[(lines.runs == 2)].iloc[0]
    assert two_seeds.folded_std == pytest.approx(statistics.stdev([97.0, 98.0]))
    assert two_seeds.noise == pytest.approx(100 * math.sqrt(0.975 * 0.025 / 360))


def test_a_table_of_an_earlier_version_reads_with_the_newer_columns_empty(tmp_path: Path) -> None:
    older = COLUMNS[: COLUMNS.index("skipped_samples")]
    row = _row(folded=98.0)
    text = ",".join(older) + "\n" + ",".join(str(row[c]) for c in older) + "\n"
    (tmp_path / "classification.csv").write_text(text)
    rows = read_results(tmp_path)
    assert rows.skipped_samples.isna().all() and rows.fp_hash.isna().all()
    assert aggregate(rows).float_model.tolist() == ["fp 99.0"]  # the float score stands in


def test_rows_of_smoke_runs_stay_out_of_the_board(tmp_path: Path) -> None:
    """Runs on capped batches write results/debug/<task>.csv, which the board does not read."""
    append_row(table_path(tmp_path, "classification", debug=True), _row(folded=10.0))
    with pytest.raises(ValueError, match="holds no results table"):
        build_board(tmp_path, tmp_path)
    append_row(table_path(tmp_path, "classification"), _row(folded=97.0))
    build_board(tmp_path, tmp_path)
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| 97.00 |" in text and "10.00" not in text


def test_the_committed_tables_of_a_fresh_clone_make_a_board(tmp_path: Path) -> None:
    tables = sorted((REPO / "results").glob("*.csv"))
    assert tables, "results/ holds no committed table"
    written = build_board(REPO / "results", tmp_path)
    assert (tmp_path / "leaderboard.md") in written
    text = (tmp_path / "leaderboard.md").read_text()
    for table in tables:
        assert f"## {table.stem}" in text


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
        _row(
            folded=91.0,
            kurtosis_before=3.0,
            kurtosis_after=2.0,
            run_dir=str(run_dir),
            command="gdrq-run bits=4 method.k_w=2",
        ),
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
    cells = "| W4A4 | gdrq | qat | 4 | 99.00 | 97.50 ± 0.71 | 2 | 0.82 | 1.50 | 1.00 |"
    assert f"{cells} `gdrq-run method=gdrq bits=4` |" in text
    assert "1 row(s) from uncommitted code (`-dirty`) are left out." in text
    with pytest.raises(ValueError, match="layer 'nope' is not quantized"):
        build_board(results, results, layer="nope")


def test_include_dirty_lets_uncommitted_rows_in_and_says_so(results: Path, tmp_path: Path) -> None:
    main(["--results", str(results), "--out", str(tmp_path), "--include-dirty"])
    text = (tmp_path / "leaderboard.md").read_text()
    # the -dirty seed 2 (99.5) joins seeds 0 and 1 (97.0, 98.0): std 1.26 by hand
    assert "| W4A4 | gdrq | qat | 4 | 99.00 | 98.17 ± 1.26 | 3 |" in text
    assert "1 row(s) from uncommitted code (`-dirty`) are included." in text


def test_a_table_of_another_schema_is_named(tmp_path: Path) -> None:
    (tmp_path / "detection.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match=r"detection\.csv is not a results table"):
        main(["--results", str(tmp_path)])


def test_filters_that_match_nothing_say_so(results: Path) -> None:
    with pytest.raises(SystemExit, match="no results row matches the filters"):
        main(["--results", str(results), "--model", "resnet50"])


def test_rows_are_averaged_by_spec_hash_and_float_model_not_by_command(tmp_path: Path) -> None:
    """The same command run at two code versions whose defaults differ (two spec hashes) gives
    two lines; two spellings of one effective spec give one."""
    table = tmp_path / "classification.csv"
    command = "gdrq-run method=gdrq bits=4"
    for row in (
        _row(folded=97.0, command=command, spec_hash="old"),
        _row(folded=98.0, command=command, spec_hash="new"),
        _row(folded=99.0, command="gdrq-run bits.w=4 bits.a=4 seed=1", spec_hash="new"),
    ):
        append_row(table, row)
    lines = aggregate(read_results(tmp_path))
    assert sorted(zip(lines.spec, lines.folded, lines.runs)) == [("new", 98.5, 2), ("old", 97.0, 1)]


def test_a_method_without_a_fold_is_ranked_by_its_quantized_model(tmp_path: Path) -> None:
    table = tmp_path / "classification.csv"
    for seed, quant in enumerate((96.0, 97.0)):
        row = _row(method="brevitas", groups="per_channel", folded=quant, quant=quant, seed=seed)
        append_row(table, {**row, "folded": "", "spec_hash": "b"})
    (line,) = aggregate(read_results(tmp_path)).itertuples()
    assert (line.method, line.folded, line.runs, line.drop) == ("brevitas", 96.5, 2, 2.5)
