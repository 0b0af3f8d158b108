"""The end of a multirun (`gdrq-run -m ...`, gdrq-sweep): one table of the rows its runs wrote.

A Hydra callback (conf/config.yaml, hydra.callbacks). It runs on the launching machine after
every job has returned, whatever the launcher (joblib processes, Slurm jobs), so it reads the
rows from the results tables rather than from the jobs: those whose run directory lies in the
sweep's directory.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gdrq_bench.reporting.results import DEBUG_DIR

SHOWN = ("metric", "fp", "folded", "drop", "command")


def sweep_rows(results_dir: Path, sweep_dir: Path) -> list[tuple[Path, dict[str, str]]]:
    """(table, row) of every row, in the results tables and their debug/ copies, whose run
    directory is inside `sweep_dir`."""
    sweep = sweep_dir.resolve()
    tables = sorted([*results_dir.glob("*.csv"), *(results_dir / DEBUG_DIR).glob("*.csv")])
    found = []
    for table in tables:
        with table.open(newline="") as handle:
            for row in csv.DictReader(handle):
                run_dir = Path(row.get("run_dir") or ".").resolve()
                if run_dir == sweep or sweep in run_dir.parents:
                    found.append((table, row))
    return found


def summary(rows: list[tuple[Path, dict[str, str]]]) -> str:
    """A plain-text table: table, run directory and the row's scores and command."""
    lines = [" | ".join(["table", "run_dir", *SHOWN])]
    lines += [
        " | ".join([str(table), row["run_dir"], *(row[c] for c in SHOWN)]) for table, row in rows
    ]
    return "\n".join(lines)


class MultirunSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = sweep_rows(Path(config.results_dir), Path(config.hydra.sweep.dir))
        print(f"gdrq-run: the multirun wrote {len(rows)} row(s):\n{summary(rows)}", flush=True)
