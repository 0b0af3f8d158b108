"""The leaderboard: results/*.csv read with pandas, the rows of each configuration averaged.

A configuration is an effective spec and fine-tuning recipe (the row's `spec_hash`) on one float
model (`fp_hash`): rows that share both differ only in their seed, and their folded scores are
averaged (mean, sample std, count; the quantized score for a method that does not fold),
whatever command line set the knobs; rows whose effective
knobs or float models differ are never mixed (rows written before spec_hash existed are grouped
by their command up to its seed), and rows from uncommitted code (`git_sha` ending in -dirty)
are left out. Rows of runs that failed a check after training (`failed` set: an export) are not
read at all.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.reporting.results import COLUMNS

SEED = re.compile(r"\s+seed=\d+(?=\s|$)")
CONFIGURATION = [
    "task",
    "dataset",
    "model",
    "bits",
    "method",
    "schedule",
    "groups",
    "spec",
    "float_model",
]


def read_results(results_dir: Path) -> pd.DataFrame:
    """Every row of every results/<task>.csv but those marked failed. A table written by an
    earlier version (its columns a prefix of today's) reads with the newer columns empty;
    another is refused."""
    frames = []
    for table in sorted(results_dir.glob("*.csv")):
        frame = pd.read_csv(table, dtype={"groups": str, "fold_err": str, "fp_hash": str})
        header = list(frame.columns)
        if header != COLUMNS[: len(header)]:
            raise ValueError(
                f"{table} is not a results table: its columns are not those gdrq-run writes"
            )
        frames.append(frame.reindex(columns=COLUMNS))
    if not frames:
        raise ValueError(f"{results_dir} holds no results table (<task>.csv)")
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows.failed.isna()].copy()  # a run that failed after training: not a result
    # a method that keeps BN apart (method=brevitas) deploys its quantized model
    rows["folded"] = rows.folded.fillna(rows.quant)
    is_float = (rows.w_bits == FLOAT_BITS) & (rows.a_bits == FLOAT_BITS)
    rows.loc[is_float, ["method", "groups"]] = ["float", "-"]  # one float line per model
    rows["bits"] = "W" + rows.w_bits.astype(str) + "A" + rows.a_bits.astype(str)
    # rows from before the column: all QAT
    rows["schedule"] = rows.schedule.astype(object).fillna("qat")
    rows["setup"] = rows.command.str.replace(SEED, "", regex=True)
    rows["spec"] = rows.spec_hash.astype(object).fillna("command " + rows.setup)
    # rows written before fp_hash existed: the float score stands for the float model
    rows["float_model"] = rows.fp_hash.astype(object).fillna("fp " + rows.fp.astype(str))
    rows["dirty"] = rows.git_sha.astype(str).str.endswith("-dirty")
    return rows


def select(rows: pd.DataFrame, **filters: list[str] | None) -> pd.DataFrame:
    """Rows whose column matches one of the given values, for each filter that is set."""
    for column, values in filters.items():
        if values:
            rows = rows[rows[column].isin(values)]
    return rows


def binomial_error(score: float, samples: float) -> float:
    """The standard error, in points, of an accuracy of `score` % on `samples` test images:
    how far a top1 moves by the luck of the test set alone."""
    if not samples or math.isnan(samples):
        return math.nan
    p = score / 100
    return 100 * math.sqrt(p * (1 - p) / samples)


def aggregate(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per configuration of the committed-code rows: folded mean, sample std and
    count over seeds, the float score, the mean drops (against the float model and against
    its equal-budget fine-tuned control) and the binomial standard error of a
    single top1 (empty for other metrics), highest bit-widths first, then best first."""
    clean = rows[~rows.dirty]
    grouped = clean.groupby(CONFIGURATION, sort=False, dropna=False)
    lines = grouped.agg(
        setup=("setup", "first"),
        metric=("metric", "first"),
        group_strategy=("group_strategy", "first"),
        w_bits=("w_bits", "first"),
        a_bits=("a_bits", "first"),
        fp=("fp", "mean"),
        folded=("folded", "mean"),
        folded_std=("folded", "std"),
        runs=("folded", "size"),
        drop=("drop", "mean"),
        drop_ft=("drop_ft", "mean"),
        eval_samples=("eval_samples", "first"),
        kurtosis_before=("kurtosis_before", "mean"),
        kurtosis_after=("kurtosis_after", "mean"),
    ).reset_index()
    lines["noise"] = [
        binomial_error(score, samples) if metric == "top1" else math.nan
        for score, samples, metric in zip(lines.folded, lines.eval_samples, lines.metric)
    ]
    return lines.sort_values(
        ["task", "dataset", "model", "w_bits", "a_bits", "folded"],
        ascending=[True, True, True, False, False, False],
        kind="stable",
    )


NUMBER_COLUMNS = ("float", "folded", "n", "SE", "drop", "drop_ft")


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if c in NUMBER_COLUMNS else "---" for c in frame) + "|"
    lines = [
        "| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(False)
    ]
    return "\n".join([header, rule, *lines])


def _mean_and_spread(mean: float, std: float, runs: int) -> str:
    return f"{mean:.2f}" if runs < 2 else f"{mean:.2f} ± {std:.2f}"


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def leaderboard_markdown(rows: pd.DataFrame, dirty_included: int = 0) -> str:
    """One section per task, one table per data set and model; `dirty_included` rows from
    uncommitted code were let in (gdrq-board --include-dirty) and are said to be."""
    lines = aggregate(rows)
    dirty = int(rows.dirty.sum())
    parts = [
        "# Leaderboard",
        "",
        "Written by `gdrq-board` from `results/*.csv`. One line per configuration: an "
        "effective spec and fine-tuning recipe (`spec_hash`) on one float model. `folded` is "
        "the mean ± sample std of the deployed (folded) model's score over the `n` seeds that "
        "ran; `SE` is the binomial "
        "standard error of one top1 on the validation set (how far the test set's luck "
        "alone moves it); differences within about twice the larger of the spread and SE "
        "are noise. `drop_ft` is the drop against the equal-budget float control (the float "
        "model fine-tuned as the quantized one, `fp_ft`): the quantization's loss alone; — "
        "where the control did not run. `schedule` is qat (fine-tuned) or ptq (calibrated "
        "on training images, nothing trained). `command` reproduces the line (add `seed=N`): the "
        "first of its rows' commands.",
    ]
    if dirty:
        parts += ["", f"{dirty} row(s) from uncommitted code (`-dirty`) are left out."]
    if dirty_included:
        parts += ["", f"{dirty_included} row(s) from uncommitted code (`-dirty`) are included."]
    for task, task_lines in lines.groupby("task", sort=True):
        parts += ["", f"## {task}"]
        for (dataset, model), table in task_lines.groupby(["dataset", "model"], sort=True):
            metric = ", ".join(sorted(table.metric.unique()))
            parts += ["", f"### {dataset} / {model} ({metric}, %)", ""]
            shown = pd.DataFrame(
                {
                    "bits": table.bits,
                    "method": table.method,
                    "schedule": table.schedule,
                    "groups": table.groups,
                    "float": table.fp.map(_number),
                    "folded": [
                        _mean_and_spread(*values)
                        for values in zip(table.folded, table.folded_std, table.runs)
                    ],
                    "n": table.runs,
                    "SE": table.noise.map(_number),
                    "drop": table["drop"].map(_number),
                    "drop_ft": table["drop_ft"].map(_number),
                    "command": "`" + table.setup + "`",
                }
            )
            parts.append(_markdown_table(shown))
    return "\n".join(parts) + "\n"
