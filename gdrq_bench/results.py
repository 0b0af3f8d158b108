"""The results table: its columns, and an append that parallel runs cannot tear or interleave."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

from gdrq_bench.errors import ConfigError

# The stable interface (DESIGN.md): add columns at the end, never rename or reorder these.
COLUMNS = [
    "run_id",
    "finished_at",
    "git_sha",
    "command",
    "task",
    "dataset",
    "model",
    "method",
    "w_bits",
    "a_bits",
    "groups",
    "group_strategy",
    "alpha_mode",
    "k_w",
    "k_a",
    "first_last_bits",
    "seed",
    "metric",
    "fp",
    "quant",
    "folded",
    "drop",
    "fold_err",
    "kurtosis_before",
    "kurtosis_after",
    "ql_before",
    "ql_after",
    "train_s",
    "device",
    "versions",
    "run_dir",
    "fp_source",
]


def table_path(results_dir: str | Path, task: str) -> Path:
    return Path(results_dir) / f"{task}.csv"


def check_writable(results_dir: str | Path) -> None:
    """Fail before any training if the results directory cannot take a row."""
    directory = Path(results_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"results_dir={directory} is not writable: {error.strerror}") from None


def _encode(values: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def append_row(path: Path, row: Mapping[str, object]) -> None:
    """Append one row under a file lock, as one write, with the header if the file is new.

    A table whose header differs from COLUMNS is refused rather than mixed.
    """
    missing = [column for column in COLUMNS if column not in row]
    if missing:
        raise ValueError(f"results row misses columns {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        text = _encode([row[column] for column in COLUMNS])
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as table:
                header = next(csv.reader(table), [])
            if header != COLUMNS:
                raise ConfigError(
                    f"{path} has other columns than this version writes; move it away"
                )
        else:
            text = _encode(list(COLUMNS)) + text
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, text.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
