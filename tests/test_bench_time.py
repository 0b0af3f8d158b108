"""bench/bench_time.py: what make bench costs, from the rows its steps keep."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import bench_time
import make_results

STARTED = datetime(2026, 3, 1, 10, 0, 0)  # local time, as Hydra names a run directory


def _row(minutes: float, train_s: float = 0.0, **columns: object) -> dict[str, object]:
    """A row of a run started at STARTED (local time) that took `minutes` of wall time."""
    finished = STARTED.astimezone(timezone.utc) + timedelta(minutes=minutes)
    return {
        "run_id": STARTED.strftime(bench_time.STAMP_FORMAT) + "-abcdef",
        "finished_at": finished.isoformat(timespec="seconds"),
        "train_s": train_s,
        "w_bits": 4,
        "fp_hash": "float-a",
        "dataset": "fashion_mnist",
        **columns,
    }


def _write(folder: Path, rows: list[dict[str, object]], task: str = "classification") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / f"{task}.csv", index=False)
    return str(folder)


def test_a_run_costs_its_wall_time_or_its_training_time_if_longer() -> None:
    rows = pd.DataFrame(
        [
            _row(30),  # 30 min from the stamp to finished_at
            _row(10, train_s=1500),  # resumed: its training across pieces took 25 min
            _row(0, train_s=90, run_id="3-abcdef"),  # a multirun job: no stamp, its training
            _row(0, train_s=float("nan"), run_id="4-abcdef"),  # nothing to time it by
        ]
    )
    seconds = bench_time.run_seconds(rows)
    assert seconds.iloc[:3].tolist() == pytest.approx([1800, 1500, 90])
    assert pd.isna(seconds.iloc[3])


def test_a_float_model_trained_again_by_a_later_step_counts_once(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", [_row(120, w_bits=32), _row(5)])
    later = [_row(100, w_bits=32), _row(6), _row(7, fp_hash="float-b", w_bits=32)]
    second = _write(tmp_path / "b", later)
    costs = bench_time.costs({"first": first, "second": second})
    assert costs.runs.tolist() == [2, 2]
    assert costs.seconds.tolist() == pytest.approx([125 * 60, 13 * 60])


def test_a_step_reads_every_task_table_of_its_folder_or_one_data_set(tmp_path: Path) -> None:
    _write(tmp_path, [_row(2), _row(3, dataset="digits")])
    _write(tmp_path, [_row(4, dataset="shapes", w_bits=8)], task="detection")
    costs = bench_time.costs(
        {"all": str(tmp_path), "digits": f"{tmp_path}:digits", "none": str(tmp_path / "no")}
    )
    assert costs.seconds.tolist() == pytest.approx([9 * 60, 3 * 60, 0])
    text = bench_time.table(costs, jobs=2)
    assert "| none | no rows yet | 0.0 | 0.0 |" in text
    assert text.splitlines()[-1] == "| all | 4 | 0.2 | 0.1 |"


def test_the_time_step_comes_last_and_reads_every_step_that_writes_rows() -> None:
    steps = make_results.steps(jobs=2)
    assert steps[-1].name == "time"
    located = [arg for arg in steps[-1].commands[-1] if "=" in arg]
    assert located == [f"{step.name}={step.results}" for step in steps if step.results]
    assert {"digits=bench/results:digits", "accuracy=bench/results/fashion"} <= set(located)
