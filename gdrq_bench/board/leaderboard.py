"""The leaderboard: results/*.csv read with pandas, the best row of each configuration kept."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gdrq_bench.results import COLUMNS

FLOAT_BITS = 32
# One leaderboard line per configuration: the best folded score among its rows (seeds, reruns).
CONFIGURATION = ["task", "dataset", "model", "w_bits", "a_bits", "method", "groups"]


def read_results(results_dir: Path) -> pd.DataFrame:
    """Every row of every results/<task>.csv; tables of another schema are named and refused."""
    frames = []
    for table in sorted(results_dir.glob("*.csv")):
        frame = pd.read_csv(table, dtype={"groups": str, "fold_err": str})
        missing = [column for column in COLUMNS if column not in frame.columns]
        if missing:
            raise ValueError(f"{table} is not a results table: it lacks columns {missing}")
        frames.append(frame)
    if not frames:
        raise ValueError(f"{results_dir} holds no results table (<task>.csv)")
    rows = pd.concat(frames, ignore_index=True)
    is_float = (rows.w_bits == FLOAT_BITS) & (rows.a_bits == FLOAT_BITS)
    rows.loc[is_float, ["method", "groups"]] = ["float", "-"]  # one float line per model
    rows["bits"] = "W" + rows.w_bits.astype(str) + "A" + rows.a_bits.astype(str)
    return rows


def select(rows: pd.DataFrame, **filters: list[str] | None) -> pd.DataFrame:
    """Rows whose column matches one of the given values, for each filter that is set."""
    for column, values in filters.items():
        if values:
            rows = rows[rows[column].isin(values)]
    return rows


def best_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The best folded row of each configuration, highest bit-widths first, then best first;
    `runs` counts the rows behind each line."""
    ordered = rows.sort_values("folded", ascending=False, kind="stable")
    best = ordered.drop_duplicates(CONFIGURATION).copy()
    best["runs"] = best.set_index(CONFIGURATION).index.map(rows.groupby(CONFIGURATION).size())
    return best.sort_values(
        ["task", "dataset", "model", "w_bits", "a_bits", "folded"],
        ascending=[True, True, True, False, False, False],
        kind="stable",
    )


NUMBER_COLUMNS = ("float", "folded", "drop", "runs")


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if c in NUMBER_COLUMNS else "---" for c in frame) + "|"
    lines = [
        "| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(False)
    ]
    return "\n".join([header, rule, *lines])


def leaderboard_markdown(rows: pd.DataFrame) -> str:
    """One section per task, one table per data set and model."""
    best = best_rows(rows)
    parts = [
        "# Leaderboard",
        "",
        "Written by `gdrq-board` from `results/*.csv`: the best row (by the folded model's "
        "score) of each task, data set, model, bit-width, method and group count; `runs` counts "
        "the rows behind it. `command` reproduces the row.",
    ]
    for task, task_rows in best.groupby("task", sort=True):
        parts += ["", f"## {task}"]
        for (dataset, model), table in task_rows.groupby(["dataset", "model"], sort=True):
            metric = ", ".join(sorted(table.metric.unique()))
            parts += ["", f"### {dataset} / {model} ({metric}, %)", ""]
            shown = table[["bits", "method", "groups", "fp", "folded", "drop", "runs"]].copy()
            shown = shown.rename(columns={"fp": "float"})
            shown["command"] = "`" + table.command + "`"
            for column in ("float", "folded", "drop"):
                shown[column] = shown[column].map("{:.2f}".format)
            parts.append(_markdown_table(shown))
    return "\n".join(parts) + "\n"
