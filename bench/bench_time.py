"""What `make bench` costs from a clean clone, read from the rows its steps keep.

    python bench/bench_time.py [--jobs 2] STEP=RESULTS_DIR[:DATASET] ...

Each row is one gdrq-run and its cost is what that run took: from the start stamp in its run
directory's name (the machine's local time, as Hydra writes it) to its `finished_at`, or its
`train_s` where that is longer (a run resumed from a checkpoint adds up its training across
its pieces, while the stamp is of its last piece only). A float model trained again by a later
step (its cache was missing then) counts once, where it was first trained: from a clean clone
the later step reads the cache. A step's hours at `--jobs N` are its hours of one core over N
(one thread per run, N runs at once, the queue never idle), so the total is what `make bench`
takes on this machine's cores, give or take the last runs of each step that leave a core idle.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from gdrq_bench.quant.choices import FLOAT_BITS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/accuracy.py, when imported
from accuracy import task_tables

STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S-%f"  # conf/config.yaml's hydra.run.dir
STAMP_CHARS = 26


def run_start(run_id: str) -> pd.Timestamp | None:
    """When a run started, from the run directory's name its run_id begins with (local time);
    None for a run_id without one (multirun jobs are named by their number)."""
    try:
        local = datetime.strptime(run_id[:STAMP_CHARS], STAMP_FORMAT)
    except ValueError:
        return None
    return pd.Timestamp(local.astimezone())


def run_seconds(rows: pd.DataFrame) -> pd.Series:
    """Each row's cost in seconds (NaN where its start is unknown and it recorded no
    training time)."""
    starts = pd.to_datetime(
        pd.Series([run_start(r) for r in rows.run_id], index=rows.index), utc=True
    )
    wall = (pd.to_datetime(rows.finished_at, utc=True) - starts).dt.total_seconds()
    return pd.concat([wall, pd.to_numeric(rows.train_s, errors="coerce")], axis=1).max(axis=1)


def step_rows(location: str) -> pd.DataFrame:
    """The rows of RESULTS_DIR[:DATASET]: every task table in the folder (of one data set)."""
    folder, _, dataset = location.partition(":")
    tables = [pd.read_csv(path) for path in task_tables(Path(folder))]
    rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if dataset and not rows.empty:
        rows = rows[rows.dataset == dataset]
    return rows


def costs(steps: dict[str, str]) -> pd.DataFrame:
    """Per step: its runs, the runs timed and their seconds, float models retrained left out."""
    trained: set[str] = set()
    lines = []
    for name, location in steps.items():
        rows = step_rows(location)
        if rows.empty:
            lines.append({"step": name, "runs": 0, "timed": 0, "seconds": 0.0})
            continue
        floats = rows.w_bits == FLOAT_BITS
        again = floats & rows.fp_hash.isin(trained)
        trained |= set(rows.fp_hash[floats])
        seconds = run_seconds(rows[~again])
        lines.append(
            {
                "step": name,
                "runs": int((~again).sum()),
                "timed": int(seconds.notna().sum()),
                "seconds": float(seconds.sum()),
            }
        )
    return pd.DataFrame(lines)


def table(costs_by_step: pd.DataFrame, jobs: int) -> str:
    hours = costs_by_step.seconds / 3600
    lines = [
        f"| step | runs (timed) | hours of one core | hours at --jobs {jobs} |",
        "| --- | --- | --- | --- |",
    ]
    for line, step_hours in zip(costs_by_step.itertuples(), hours, strict=True):
        runs = f"{line.runs} ({line.timed})" if line.runs else "no rows yet"
        lines.append(f"| {line.step} | {runs} | {step_hours:.1f} | {step_hours / jobs:.1f} |")
    total = hours.sum()
    lines.append(f"| all | {costs_by_step.runs.sum()} | {total:.1f} | {total / jobs:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("steps", nargs="+", help="STEP=RESULTS_DIR[:DATASET], in make's order")
    args = parser.parse_args(argv)
    steps = dict(step.split("=", 1) for step in args.steps)
    print(table(costs(steps), args.jobs))


if __name__ == "__main__":
    main()
