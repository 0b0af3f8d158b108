"""Running gdrq-run from tests: a subprocess on the test's own cache and results directory."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from gdrq_bench.reporting.results import table_path

GDRQ_RUN = str(Path(sys.executable).parent / "gdrq-run")


def gdrq_env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "GDRQ_CACHE": str(cache_dir), "WANDB_MODE": "disabled"}


def gdrq_command(tmp_path: Path, *overrides: str) -> list[str]:
    """A smoke run writing its table under tmp_path/results and its files to tmp_path/run."""
    return [
        GDRQ_RUN,
        "trainer=smoke",
        f"results_dir={tmp_path / 'results'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    ]


def gdrq_run(tmp_path: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        gdrq_command(tmp_path, *overrides),
        env=gdrq_env(cache_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )


def gdrq_run_with_modules(
    tmp_path: Path, modules: dict[str, str], *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A smoke run with `modules` (file name: source) on its PYTHONPATH: a sitecustomize that
    breaks something on purpose at start-up, or a plugin named in `plugins=`; `env` adds to
    its environment."""
    folder = tmp_path / "modules"
    folder.mkdir(exist_ok=True)
    for name, source in modules.items():
        (folder / name).write_text(source)
    return subprocess.run(
        gdrq_command(tmp_path, "logger=none", *overrides),
        env={**gdrq_env(tmp_path / "cache"), "PYTHONPATH": str(folder), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_rows(tmp_path: Path, task: str = "classification") -> list[dict[str, str]]:
    """The rows of tmp_path/results: smoke runs (capped batches) write to its debug/ table."""
    table = table_path(tmp_path / "results", task, debug=True)
    if not table.exists():
        return []
    with table.open(newline="") as handle:
        return list(csv.DictReader(handle))


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("gdrq-run: error:")]


def assert_failed_cleanly(
    result: subprocess.CompletedProcess, tmp_path: Path, task: str, named: str
) -> None:
    """A non-zero exit, exactly one error line and it names `named`, and no results row."""
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr[-2000:]
    assert named in lines[0]
    assert read_rows(tmp_path, task) == []
