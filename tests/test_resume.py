"""A run killed with SIGKILL, or stopped with Ctrl-C (SIGINT), in its qat stage and started
again with trainer.resume=true writes the row an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_runner import finished_run, gdrq_command, gdrq_env, gdrq_run, read_rows, start_forked

# Long enough stages that the kill lands between qat epochs, short enough for CI.
STAGES = (
    "logger=none",
    "trainer.max_train_batches=6",
    "trainer.reshape.epochs=2",
    "trainer.qat.epochs=4",
    "trainer.max_eval_batches=3",
)


def _stop_after_first_qat_epoch(
    workdir: Path, cache_dir: Path, stop: signal.Signals
) -> subprocess.CompletedProcess:
    command, outputs = gdrq_command(workdir, *STAGES), workdir.parent
    process = start_forked(command, gdrq_env(cache_dir), outputs)
    checkpoints = cache_dir / "checkpoints"
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("*/qat.pt")) and process.is_alive():
        assert time.monotonic() < deadline, "no qat checkpoint appeared"
        time.sleep(0.01)
    os.kill(process.pid, stop)
    return finished_run(process, command, outputs, 120)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(its work directory, the cache holding its float model) of a run left alone."""
    workdir = tmp_path_factory.mktemp("whole")
    cache_dir = workdir / "cache"
    whole = gdrq_run(workdir, cache_dir, *STAGES)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert not any((cache_dir / "checkpoints").glob("*/*.pt")), "a finished run keeps none"
    return workdir, cache_dir


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_stopped_run_resumes_to_the_uninterrupted_row(
    tmp_path: Path, uninterrupted: tuple[Path, Path], stop: signal.Signals
) -> None:
    whole, cache_dir = uninterrupted
    stopped = _stop_after_first_qat_epoch(tmp_path / "killed", cache_dir, stop)
    if stop == signal.SIGKILL:
        assert stopped.returncode == -signal.SIGKILL
    else:  # one line that says how to go on, and the interrupted exit status
        assert stopped.returncode == 130, stopped.stderr[-2000:]
        lines = [line for line in stopped.stderr.splitlines() if "gdrq-run: error:" in line]
        assert len(lines) == 1 and "trainer.resume=true" in lines[0]
    assert read_rows(tmp_path / "killed") == []
    assert not list((cache_dir / "checkpoints").glob("*/*.tmp")), "no half-written checkpoint"
    saved = sorted(path.name for path in (cache_dir / "checkpoints").glob("*/*.pt"))
    assert saved == ["qat.pt", "reshape.pt"]  # the float model came from the cache

    resumed = gdrq_run(tmp_path / "killed", cache_dir, *STAGES, "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = resumed.stdout + resumed.stderr
    assert "reshape: all 2 epochs were done before" in log
    assert "qat: resumed after epoch 1/4" in log
    [expected], [row] = read_rows(whole), read_rows(tmp_path / "killed")
    for column in ("fp", "quant", "folded", "fold_err", "kurtosis_after", "ql_after"):
        assert row[column] == expected[column], column
    metrics = [
        json.loads((Path(r["run_dir"]) / "metrics.json").read_text()) for r in (expected, row)
    ]
    assert metrics[0] == metrics[1]
    assert not any((cache_dir / "checkpoints").glob("*/*.pt"))
