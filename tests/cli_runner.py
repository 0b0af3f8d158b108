"""Running gdrq-run from tests: a process of its own on the test's own cache and results
directory.

`gdrq_run` forks each run from a forkserver that has imported gdrq-run and torch once (Python's
multiprocessing forkserver, which is single-threaded and has run nothing): a fresh process
running gdrq-run's `main` on its own argv and environment, as the console script does, without
the ~5 s of imports a new interpreter pays per run. Tests that need the console script itself
(launchers) start it with subprocess.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
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


RUN_TIMEOUT_S = 300
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["gdrq_bench.cli", "gdrq_bench.run", "onnx", "onnxruntime"])


def _run_main(
    argv: list[str], env: dict[str, str], path: list[str], stdout: str, stderr: str
) -> None:
    """In the forked process: gdrq-run's main on `argv`, `env` and `path` first on sys.path
    (as PYTHONPATH puts it), its output to the files."""
    from gdrq_bench.cli import main

    os.environ.clear()
    os.environ.update(env)
    sys.path[:0] = path
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, as in a terminal
    for stream, file in ((sys.stdout, stdout), (sys.stderr, stderr)):
        stream.flush()
        with open(file, "w") as target:
            os.dup2(target.fileno(), stream.fileno())
    sys.argv = argv
    main()


def start_forked(
    argv: list[str], env: dict[str, str], outputs: Path, path: tuple[str, ...] = ()
) -> multiprocessing.Process:
    """gdrq-run's main on `argv`, started in a process forked from the forkserver; its stdout
    and stderr go to outputs/stdout and outputs/stderr."""
    files = (str(outputs / "stdout"), str(outputs / "stderr"))
    process = _FORKSERVER.Process(target=_run_main, args=(argv, env, list(path), *files))
    process.start()
    return process


def finished_run(
    process: multiprocessing.Process, argv: list[str], outputs: Path, timeout: float
) -> subprocess.CompletedProcess:
    """A process start_forked started, waited for (killed past `timeout` seconds, as
    subprocess.run's timeout): its exit code, stdout and stderr, as subprocess.run gives them."""
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        raise subprocess.TimeoutExpired(argv, timeout)
    return subprocess.CompletedProcess(
        argv, process.exitcode, (outputs / "stdout").read_text(), (outputs / "stderr").read_text()
    )


def forked_run(
    argv: list[str], env: dict[str, str], path: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """gdrq-run's main on `argv` in a process forked from the forkserver, run to its end."""
    with tempfile.TemporaryDirectory(prefix="gdrq-run-output-") as folder:
        outputs = Path(folder)
        return finished_run(start_forked(argv, env, outputs, path), argv, outputs, RUN_TIMEOUT_S)


def gdrq_run(tmp_path: Path, cache_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """A smoke run (gdrq_command), forked."""
    return forked_run(gdrq_command(tmp_path, *overrides), gdrq_env(cache_dir))


def gdrq_run_with_modules(
    tmp_path: Path, modules: dict[str, str], *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """A smoke run, forked, with `modules` (file name: source) on its PYTHONPATH: plugins
    named in `plugins=` (some break a stage on purpose); `env` adds to its environment."""
    folder = tmp_path / "modules"
    folder.mkdir(exist_ok=True)
    for name, source in modules.items():
        (folder / name).write_text(source)
    argv = gdrq_command(tmp_path, "logger=none", *overrides)
    environment = {**gdrq_env(tmp_path / "cache"), "PYTHONPATH": str(folder), **(env or {})}
    return forked_run(argv, environment, (str(folder),))


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
