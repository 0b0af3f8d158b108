"""The results table: its columns, and an append that parallel runs cannot tear or interleave."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import SPEC_KEYS

# The stable interface (docs/results.md): add columns at the end, never rename or reorder.
ROW_COLUMNS = [
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
    "skipped_samples",
    "finetune_epochs",
    "nll",
    "fp_hash",
    "eval_samples",
    "exact_diff",
    "int8",
    "int8_agree",
    "failed",
]

# the row's name of a QuantSpec knob, where it is not the knob's own
KNOB_COLUMNS = {"alpha": "alpha_mode"}
# every knob of the spec as its own column (the first ones were in the table before), then a
# hash of the effective spec and the fine-tuning recipe (run/keys.py: spec_hash)
SPEC_COLUMNS = [KNOB_COLUMNS.get(name, name) for name in SPEC_KEYS]
# the knobs up to `skip` were in the spec when its columns came; later ones go at the end (a
# table's columns only grow at the end)
FIRST_SPEC_COLUMNS = SPEC_COLUMNS[: SPEC_COLUMNS.index("skip") + 1]
# the knobs up to `scale_clip_8bit` came before trainer.calibrate.bn_reestimate's column
EARLY_SPEC_END = SPEC_COLUMNS.index("scale_clip_8bit") + 1
COLUMNS = [
    *ROW_COLUMNS,
    *(column for column in FIRST_SPEC_COLUMNS if column not in ROW_COLUMNS),
    "spec_hash",
    "fp_ft",  # the equal-budget float control's score (run/control.py); empty: not run
    "drop_ft",  # fp_ft - folded: the quantization's loss alone
    # dataset.holdout: the held-out validation images and the metric on them (the columns
    # above are on the data set's evaluation split, eval_samples images)
    "val_samples",
    "val_fp",
    "val_fp_ft",
    "val_folded",
    # batches per fine-tuning epoch (trainer.finetune_batches, capped by max_train_batches);
    # empty: whole epochs, or no fine-tuning. With finetune_epochs, the fine-tuning budget
    "finetune_batches",
    # trainer.schedule (empty in rows from before it: qat); under ptq, the calibration images
    # and trainer.calibrate's choices (`percentile 99.99`, `adaround 1000`; empty in qat rows)
    "schedule",
    "calib_samples",
    "act_range",
    "rounding",
    "bias_correction",
    *SPEC_COLUMNS[len(FIRST_SPEC_COLUMNS) : EARLY_SPEC_END],  # knobs added since
    # under ptq, whether BN's statistics were re-estimated (trainer.calibrate.bn_reestimate)
    "bn_reestimate",
    *SPEC_COLUMNS[EARLY_SPEC_END:],  # knobs added after it
]


DEBUG_DIR = "debug"  # rows of runs on capped batches: not read by gdrq-board


def table_path(results_dir: str | Path, task: str, debug: bool = False) -> Path:
    directory = Path(results_dir) / DEBUG_DIR if debug else Path(results_dir)
    return directory / f"{task}.csv"


def _encode(values: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _add_new_columns(path: Path) -> None:
    """Rewrite a table of an earlier version (its columns a prefix of COLUMNS) with the
    columns added since, empty in its rows; atomically, under the caller's lock."""
    with path.open(newline="") as table:
        rows = list(csv.reader(table))
    width = len(COLUMNS)
    text = "".join(_encode(row + [""] * (width - len(row))) for row in [COLUMNS, *rows[1:]])
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def append_row(path: Path, row: Mapping[str, object]) -> None:
    """Append one row under a file lock, as one write, with the header if the file is new.

    A table of an earlier version gets the columns added since (empty in its old rows); one
    whose header differs otherwise is refused rather than mixed.
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
            if header != COLUMNS[: len(header)]:
                raise ConfigError(
                    f"{path} has other columns than this version writes; move it away"
                )
            if len(header) < len(COLUMNS):
                _add_new_columns(path)
        else:
            text = _encode(list(COLUMNS)) + text
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, text.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
