"""gdrq-board: the leaderboard and plots read from the results tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdrq_bench.board import plots
from gdrq_bench.board.leaderboard import leaderboard_markdown, read_results, select
from gdrq_bench.reporting import figures


def build_board(
    results_dir: Path,
    out_dir: Path,
    tasks: list[str] | None = None,
    models: list[str] | None = None,
    methods: list[str] | None = None,
    layer: str | None = None,
    include_dirty: bool = False,
) -> list[Path]:
    """Write leaderboard.md and the plots of the selected rows; the files written. Rows from
    uncommitted code are left out unless `include_dirty` (a local experiment's board)."""
    rows = select(read_results(results_dir), task=tasks, model=models, method=methods)
    if rows.empty:
        raise ValueError("no results row matches the filters")
    dirty_included = int(rows.dirty.sum()) if include_dirty else 0
    if include_dirty:
        rows = rows.assign(dirty=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "leaderboard.md"]
    written[0].write_text(leaderboard_markdown(rows, dirty_included))
    for task, task_rows in rows[~rows.dirty].groupby("task"):  # -dirty rows: not plotted
        quantized = task_rows[task_rows.method != "float"]
        if not quantized.empty:
            figure = plots.score_against_bits(task_rows)
            written.append(figures.save(figure, out_dir / f"{task}_score_vs_bits.png"))
        if task_rows.kurtosis_after.notna().any():
            figure = plots.kurtosis_before_after(task_rows)
            written.append(figures.save(figure, out_dir / f"{task}_kurtosis.png"))
        source = plots.histogram_source(task_rows)
        if source is not None:
            row, stats = source
            figure, _ = figures.weight_histogram(stats, layer)
            figure.suptitle(f"{row.command}", fontsize="small")
            written.append(figures.save(figure, out_dir / f"{task}_weight_histogram.png"))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"), help="tables to read")
    parser.add_argument("--out", type=Path, default=None, help="where to write (--results)")
    parser.add_argument("--task", action="append", help="only this task (repeatable)")
    parser.add_argument("--model", action="append", help="only this model (repeatable)")
    parser.add_argument("--method", action="append", help="only this method (repeatable)")
    parser.add_argument("--layer", default=None, help="histogram layer (default: the middle one)")
    parser.add_argument(
        "--include-dirty",
        action="store_true",
        help="also rows from uncommitted code (-dirty), for a local experiment's board",
    )
    args = parser.parse_args(argv)
    try:
        written = build_board(
            args.results,
            args.out or args.results,
            args.task,
            args.model,
            args.method,
            args.layer,
            args.include_dirty,
        )
    except (OSError, ValueError) as error:
        sys.exit(f"gdrq-board: error: {error}")
    for path in written:
        print(f"gdrq-board: wrote {path}")
