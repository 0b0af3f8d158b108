"""Appends from parallel processes: every row intact, none lost, none doubled."""

from __future__ import annotations

import csv
import multiprocessing
from pathlib import Path

import pytest

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.reporting.results import COLUMNS, append_row

PROCESSES, ROWS_EACH = 6, 20
LONG = "x" * 20_000  # rows far longer than a pipe or page buffer, so a torn write would show


def _append_rows(table: Path, writer: int) -> None:
    for number in range(ROWS_EACH):
        row = {column: f"{column}-{writer}-{number}" for column in COLUMNS}
        row["command"] = f"{writer}-{number}-{LONG}"
        append_row(table, row)


def test_parallel_appends_give_every_row_once_and_intact(tmp_path: Path) -> None:
    table = tmp_path / "classification.csv"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_rows, args=(table, w)) for w in range(PROCESSES)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    with table.open(newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == COLUMNS
        rows = list(reader)
    assert len(rows) == PROCESSES * ROWS_EACH
    expected = {(w, n) for w in range(PROCESSES) for n in range(ROWS_EACH)}
    seen = set()
    for values in rows:
        assert len(values) == len(COLUMNS)
        writer, number, tail = values[COLUMNS.index("command")].split("-")
        assert tail == LONG
        assert values[0] == f"run_id-{writer}-{number}"
        assert values[-1] == f"{COLUMNS[-1]}-{writer}-{number}"
        seen.add((int(writer), int(number)))
    assert seen == expected


def test_a_table_of_an_earlier_version_gets_the_new_columns(tmp_path: Path) -> None:
    table = tmp_path / "classification.csv"
    old_columns = COLUMNS[:-1]
    with table.open("w", newline="") as handle:
        csv.writer(handle).writerows([old_columns, [f"old-{c}" for c in old_columns]])
    append_row(table, {column: f"new-{column}" for column in COLUMNS})
    with table.open(newline="") as handle:
        header, old, new = csv.reader(handle)
    assert header == COLUMNS
    assert old == [f"old-{c}" for c in old_columns] + [""]
    assert new == [f"new-{c}" for c in COLUMNS]


def test_a_table_with_other_columns_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "classification.csv"
    table.write_text("run_id,top1\n1,99\n")
    with pytest.raises(ConfigError, match="other columns"):
        append_row(table, {column: "x" for column in COLUMNS})
    assert table.read_text() == "run_id,top1\n1,99\n"
