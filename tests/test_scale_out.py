"""Grids and other launchers end to end: gdrq-sweep through the joblib launcher and gdrq-board on
its rows, torchrun with two CPU processes, Hydra's submitit_local launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import gdrq_env, read_rows

BIN = Path(sys.executable).parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(command: list[str], cache_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        env={**gdrq_env(cache_dir), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_joblib_grid_writes_a_row_per_job_and_the_board_reads_them(tmp_path: Path) -> None:
    preset = tmp_path / "grid.yaml"
    preset.write_text(
        "overrides: [trainer=smoke, logger=none]\ngrids:\n  - method: gdrq,minmax\n    bits: 4\n"
    )
    sweep = _run(
        [
            str(BIN / "gdrq-sweep"),
            str(preset),
            "--jobs",
            "2",
            f"results_dir={tmp_path / 'results'}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
        ],
        tmp_path / "cache",
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "hydra/launcher=joblib" in sweep.stdout and "trainer.threads=1" in sweep.stdout
    rows = read_rows(tmp_path)
    assert sorted((row["method"], row["w_bits"]) for row in rows) == [
        ("gdrq", "4"),
        ("minmax", "4"),
    ]
    # the float model is trained once, by one of the two jobs running at once, and reused
    assert sorted(row["fp_source"] for row in rows) == ["cache", "trained"]
    assert len({row["fp"] for row in rows}) == 1

    assert "gdrq-run: the multirun wrote 2 row(s):" in sweep.stdout  # one table at the end
    # smoke rows go to results/debug/, which the board reads only when pointed at it
    debug = tmp_path / "results" / "debug"
    # --include-dirty: this test's rows are -dirty whenever the checkout has uncommitted changes
    board = _run([str(BIN / "gdrq-board"), "--results", str(debug), "--include-dirty"], tmp_path)
    assert board.returncode == 0, board.stderr[-3000:]
    leaderboard = (debug / "leaderboard.md").read_text()
    for row in rows:
        assert f"`{row['command']}`" in leaderboard
    for name in ("score_vs_bits", "kurtosis", "weight_histogram"):
        image = debug / f"classification_{name}.png"
        assert image.read_bytes()[:8] == PNG_MAGIC, name


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_writes_one_row(tmp_path: Path) -> None:
    """Both processes train; rank 0 alone writes the row, the run directory and the (offline)
    wandb run, which holds the epoch losses, the final row and the weight histogram."""
    command = [
        str(BIN / "torchrun"),
        "--nproc-per-node=2",
        "--no-python",
        str(BIN / "gdrq-run"),
        "trainer=smoke",
        "logger=wandb",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = _run(command, tmp_path / "cache", OMP_NUM_THREADS="1", WANDB_MODE="offline")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "process 0 of 2 (gloo)" in log
    [row] = read_rows(tmp_path)
    assert row["command"].startswith("torchrun --nproc-per-node=2 --no-python gdrq-run ")
    assert float(row["fold_err"]) <= 1e-6
    assert sorted(os.listdir(tmp_path / "run")) == [
        ".hydra",
        "gdrq_run.log",
        "layer_stats.json",
        "metrics.json",
        "predictions.json",
        "predictions_fp.json",
        "predictions_fp_ft.json",
        "predictions_quant.json",
        "predictions_reshape.json",
        "predictions_round.json",
        "timings.json",
        "wandb",
        "weight_histogram.png",
    ]
    [wandb_run] = (tmp_path / "run" / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("files/media/images/weight_histogram_*.png"))
    [records] = wandb_run.glob("run-*.wandb")
    for key in (b"reshape/loss", b"qat/loss", b"eval/folded/top1", b"fold_err"):
        assert key in records.read_bytes(), key


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(tmp_path: Path) -> None:
    command = [
        str(BIN / "gdrq-run"),
        "--multirun",
        "hydra/launcher=submitit_local",
        "trainer=smoke",
        "logger=none",
        "bits=8",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    result = _run(command, tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    [row] = read_rows(tmp_path)
    assert row["w_bits"] == "8"
    assert list((tmp_path / "multirun" / ".submitit").glob("*/*_result.pkl"))
