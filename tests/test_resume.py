"""A run killed with SIGKILL in its qat stage and started again with trainer.resume=true writes
the row an uninterrupted run writes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_runner import gdrq_command, gdrq_env, gdrq_run, read_rows

# Long enough stages that the kill lands between qat epochs, short enough for CI.
STAGES = (
    "logger=none",
    "trainer.max_train_batches=6",
    "trainer.reshape.epochs=2",
    "trainer.qat.epochs=4",
    "trainer.max_eval_batches=3",
)


def _kill_after_first_qat_epoch(workdir: Path, cache_dir: Path) -> int:
    process = subprocess.Popen(
        gdrq_command(workdir, *STAGES),
        env=gdrq_env(cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = cache_dir / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("*/qat.pt")) and process.poll() is None:
        assert time.monotonic() < deadline, "no qat checkpoint appeared"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    return process.wait()


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_row(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    whole = gdrq_run(tmp_path / "whole", cache_dir, *STAGES)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert not any((cache_dir / "checkpoints").glob("*/*.pt")), "a finished run keeps none"

    assert _kill_after_first_qat_epoch(tmp_path / "killed", cache_dir) == -signal.SIGKILL
    assert read_rows(tmp_path / "killed") == []
    saved = sorted(path.name for path in (cache_dir / "checkpoints").glob("*/*.pt"))
    assert saved == ["qat.pt", "reshape.pt"]  # the float model came from the cache

    resumed = gdrq_run(tmp_path / "killed", cache_dir, *STAGES, "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert "reshape: all 2 epochs were done before" in log
    assert "qat: resumed after epoch 1/4" in log
    [expected], [row] = read_rows(tmp_path / "whole"), read_rows(tmp_path / "killed")
    for column in ("fp", "quant", "folded", "fold_err", "kurtosis_after", "ql_after"):
        assert row[column] == expected[column], column
    metrics = [
        json.loads((Path(r["run_dir"]) / "metrics.json").read_text()) for r in (expected, row)
    ]
    assert metrics[0] == metrics[1]
    assert not any((cache_dir / "checkpoints").glob("*/*.pt"))
