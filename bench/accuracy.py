"""Accuracy of every method and Brevitas on shared float models, with the noise stated.

    python bench/accuracy.py run [--preset bench_fashion] [--jobs 2]
    python bench/accuracy.py table [--dataset fashion_mnist]

`run` takes a sweep preset of conf/sweep/ and runs the float model of each of its models
(`gdrq-run bits=32` with the preset's overrides and the grid's float recipe), then grid by grid
the grid's runs (one `gdrq-run` each, the runs `gdrq-sweep PRESET` would make) and the same
runs through Brevitas (bench/brevitas_qat.py) instead of the project's methods, so a preset
that lists its most telling grids first (one seed at every width) has a complete table early.
--jobs processes of one thread each, as the sweep runs its jobs; a free slot takes the first
waiting run whose float model is built, so no run waits behind another model's float. Each
finished run's per-image right/wrong is kept in bench/results/correct/<run_id>.json (run
directories are not committed; the bootstrap needs these). A run whose data set, model,
method, bit-width and seed already have a row and a kept vector is skipped (`--redo` runs it
again): a stopped bench resumes where it stopped.

`table` reads bench/results/classification.csv, keeps the latest row of each data set, model,
method, bit-width and seed (a rerun replaces earlier numbers), and prints per model: the float
model, then per bit-width and method the deployed top1 (folded; quantized for Brevitas) as mean
± sample std (n seeds), the validation NLL, and the difference to GDRQ with its 95% interval
from a paired bootstrap (`paired_bootstrap`). A difference "exceeds the noise" when its interval
excludes 0.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gdrq_bench.quant import METHODS
from gdrq_bench.sweep import GDRQ_RUN, load_preset, threads_per_job

RESULTS = Path("bench/results/classification.csv")
BITS_DIR = Path(__file__).resolve().parent.parent / "conf" / "bits"
BREVITAS_QAT = str(Path(__file__).resolve().parent / "brevitas_qat.py")
METHOD_ORDER = [*METHODS, "brevitas"]  # the registry's order, then the outside baseline
REFERENCE = "gdrq"
BOOTSTRAP_DRAWS = 2000
POLL_S = 1.0  # how often run_jobs looks for finished runs


def _common(preset_name: str, jobs: int) -> list[str]:
    """The preset's overrides and the thread count of its jobs (the float cache key holds it)."""
    preset = load_preset(preset_name)
    return [*map(str, preset.overrides), f"trainer.threads={threads_per_job(jobs)}"]


def _runs_of(grid: DictConfig) -> list[list[str]]:
    """Every run of one grid as a list of key=value overrides."""
    axes = [[f"{key}={v}" for v in str(values).split(",")] for key, values in grid.items()]
    return [list(combination) for combination in itertools.product(*axes)]


def _grid_runs(preset_name: str) -> list[list[str]]:
    """Every run of the preset's grids."""
    return [run for grid in load_preset(preset_name).grids for run in _runs_of(grid)]


FLOAT_AXES = ("method=", "bits=", "seed=")  # what varies between runs sharing a float model


def float_key(command: list[str]) -> tuple[str, ...]:
    """The overrides of a command that shape its float model: all but method, bits and seed
    (a grid may give its model a longer float recipe, e.g. trainer.fp.epochs)."""
    return tuple(arg for arg in command if "=" in arg and not arg.startswith(FLOAT_AXES))


def float_commands(preset_name: str, jobs: int) -> list[list[str]]:
    """One float run per float model of the preset's grids (the default model if none names
    one), in the grids' order."""
    keys = dict.fromkeys(float_key(run) for run in _grid_runs(preset_name))
    common = [GDRQ_RUN, *_common(preset_name, jobs), "bits=32"]
    return [[*common, *key] for key in keys]


def brevitas_commands(preset_name: str, jobs: int, grid: DictConfig) -> list[list[str]]:
    """One grid with Brevitas in place of the methods, one command per run."""
    common = _common(preset_name, jobs)
    runs = dict.fromkeys(
        tuple(a for a in run if not a.startswith("method=")) for run in _runs_of(grid)
    )
    return [[sys.executable, BREVITAS_QAT, *common, *run] for run in runs]


def method_commands(preset_name: str, jobs: int, grid: DictConfig) -> list[list[str]]:
    """One grid's gdrq-run commands, one per run."""
    common = [GDRQ_RUN, *_common(preset_name, jobs)]
    return [[*common, *run] for run in _runs_of(grid)]


def run_name(command: list[str]) -> tuple[str, str, str, int]:
    """(model, method, WxAy, seed) of a command, as its results row names it (Brevitas'
    commands name no method)."""
    values = dict(arg.split("=", 1) for arg in command if "=" in arg)
    bits = OmegaConf.load(BITS_DIR / f"{values['bits']}.yaml")
    method = values.get("method", "brevitas" if command[1] == BREVITAS_QAT else "gdrq")
    return values["model"], method, f"W{bits.w}A{bits.a}", int(values.get("seed", 0))


def finished_runs(results: Path, dataset: str) -> set[tuple[str, str, str, int]]:
    """The (model, method, WxAy, seed) that already have a row of `dataset` and its per-image
    results kept (a row whose vector was lost is run again: the table needs it)."""
    if not results.is_file():
        return set()
    rows = latest_rows(results, dataset)
    rows = rows[[kept_path(results, run_id).is_file() for run_id in rows.run_id]]
    return set(zip(rows.model, rows.method, rows.bits, rows.seed.astype(int), strict=True))


@dataclasses.dataclass
class Job:
    """One command; `needs` names the float model (its float_key) that must exist first, and
    a float run `gives` its own."""

    command: list[str]
    needs: tuple[str, ...] | None = None
    gives: tuple[str, ...] | None = None


def run_jobs(
    jobs: list[Job], slots: int, after_each: Callable[[], None] = lambda: None
) -> list[str]:
    """Run `jobs`, `slots` at a time, each slot taking the first waiting job whose float model
    is built (a run never waits behind another model's float). Returns the failed commands;
    jobs whose float run failed are among them, not started."""
    pending, running, built, failed = list(jobs), {}, set(), []
    while pending or running:
        while len(running) < slots:
            ready = next((job for job in pending if job.needs is None or job.needs in built), None)
            if ready is None:
                break
            pending.remove(ready)
            running[subprocess.Popen(ready.command)] = ready
        if not running:  # the rest wait on float runs that failed
            failed += [" ".join(job.command[1:]) for job in pending]
            break
        time.sleep(POLL_S)
        for process in [p for p in running if p.poll() is not None]:
            job = running.pop(process)
            if process.returncode != 0:
                failed.append(" ".join(job.command[1:]))
            elif job.gives is not None:
                built.add(job.gives)
            after_each()
    return failed


def run(preset_name: str, jobs: int, redo: bool = False) -> None:
    """The float runs, then grid by grid its runs and their Brevitas twins, each run started
    as soon as its float model is built; a run whose row and per-image results are already
    kept is skipped unless `redo` (a stopped bench resumes)."""
    preset = load_preset(preset_name)
    dataset = dict(str(o).split("=", 1) for o in preset.overrides).get("dataset", "digits")
    keep_correctness(RESULTS, dataset)
    finished = set() if redo else finished_runs(RESULTS, dataset)
    floats = float_commands(preset_name, jobs)
    queue = [Job(command, gives=float_key(command)) for command in floats]
    grids = [
        [*method_commands(preset_name, jobs, grid), *brevitas_commands(preset_name, jobs, grid)]
        for grid in preset.grids
    ]
    todo = [c for commands in grids for c in commands if run_name(c) not in finished]
    queue += [Job(command, needs=float_key(command)) for command in todo]
    done = sum(map(len, grids)) - len(todo)
    print(
        f"bench/accuracy.py: {len(floats)} float and {len(todo)} quantized runs to go "
        f"({done} already in {RESULTS})",
        file=sys.stderr,
        flush=True,
    )
    failed = run_jobs(queue, jobs, after_each=lambda: keep_correctness(RESULTS, dataset))
    if failed:
        sys.exit("bench/accuracy.py: runs failed: " + "; ".join(failed))


def latest_rows(results: Path, dataset: str) -> pd.DataFrame:
    rows = pd.read_csv(results)
    rows = rows[rows.dataset == dataset].copy()
    rows["bits"] = "W" + rows.w_bits.astype(str) + "A" + rows.a_bits.astype(str)
    rows["deployed"] = rows.folded.fillna(rows.quant)  # Brevitas has no folded model
    return rows.drop_duplicates(["model", "method", "bits", "seed"], keep="last")


def bits_order(bits: pd.Series) -> list[str]:
    """Widest first: W8A8, W4A4, W3A3, W2A4."""
    return sorted(bits.unique(), key=lambda b: (-int(b[1:].split("A")[0]), -int(b.split("A")[1])))


def kept_path(results: Path, run_id: str) -> Path:
    """Where a run's per-image right/wrong is kept, beside the results table: run directories
    are not committed, and the bootstrap needs these vectors on any machine that makes the
    table."""
    return results.parent / "correct" / f"{run_id}.json"


def keep_correctness(results: Path, dataset: str) -> None:
    """Keep each latest row's per-image right/wrong (bits, base64) from its run directory's
    predictions.json, where it is not kept yet."""
    if not results.is_file():
        return
    rows = latest_rows(results, dataset)
    for run_id, run_dir in zip(rows.run_id, rows.run_dir.astype(str), strict=True):
        kept, predictions = kept_path(results, run_id), Path(run_dir) / "predictions.json"
        if kept.is_file() or not predictions.is_file():
            continue
        written = json.loads(predictions.read_text())
        correct = np.asarray(written["predicted"]) == np.asarray(written["target"])
        packed = base64.b64encode(np.packbits(correct).tobytes()).decode()
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(json.dumps({"images": len(correct), "correct": packed}) + "\n")


def kept_correctness(results: Path, run_id: str) -> np.ndarray | None:
    """A run's per-image right/wrong as kept by keep_correctness; None if not kept."""
    path = kept_path(results, run_id)
    if not path.is_file():
        return None
    kept = json.loads(path.read_text())
    packed = np.frombuffer(base64.b64decode(kept["correct"]), dtype=np.uint8)
    return np.unpackbits(packed, count=kept["images"]).astype(bool)


def correctness(results: Path, rows: pd.DataFrame) -> np.ndarray | None:
    """(seeds x images) booleans: each run's final model right on each test image; None when
    a run's vector was never kept (its run directory was gone before a table was made)."""
    vectors = [kept_correctness(results, run_id) for run_id in rows.run_id]
    if any(vector is None for vector in vectors):
        return None
    return np.stack(vectors)


def paired_bootstrap(
    reference: np.ndarray, other: np.ndarray, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float, float]:
    """(difference, low, high): other's mean accuracy over its seeds minus the reference's, in
    points, with a 95% percentile interval. Each draw resamples the test images (the same
    images for both: the comparison is paired) and, within each method, its seeds, so the
    interval holds the test set's sampling noise and, where there are several seeds, the
    training noise between them."""
    rng = np.random.default_rng(seed)
    images = reference.shape[1]
    differences = np.empty(draws)
    for draw in range(draws):
        sample = rng.integers(0, images, images)
        means = []
        for correct in (reference, other):
            seeds = rng.integers(0, len(correct), len(correct))
            means.append(correct[seeds][:, sample].mean())
        differences[draw] = means[1] - means[0]
    low, high = np.percentile(differences, [2.5, 97.5]) * 100
    return float((other.mean() - reference.mean()) * 100), float(low), float(high)


def _spread(values: pd.Series, digits: int = 2) -> str:
    """'mean' for one value, 'mean ± sample std (n)' for several; '—' where not measured."""
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f} (1)"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f} ({len(values)})"


def _versus(reference: np.ndarray | None, group: pd.DataFrame, method: str, results: Path) -> str:
    if method == REFERENCE:
        return "—"
    other = correctness(results, group)
    if reference is None or other is None:
        return "n/a (per-image results not kept)"
    difference, low, high = paired_bootstrap(reference, other)
    beyond = "**" if low > 0 or high < 0 else ""
    return f"{beyond}{difference:+.2f} [{low:+.2f}, {high:+.2f}]{beyond}"


def model_table(rows: pd.DataFrame, results: Path) -> str:
    """Per bit-width and method: seeds, deployed top1, NLL, drop, and the difference to GDRQ
    at that bit-width (bold where its interval excludes 0)."""
    lines = [
        "| bits | method | top1 (n) | NLL | drop | vs GDRQ [95% CI] |",
        "|---|---|---:|---:|---:|---:|",
    ]
    quantized = rows[rows.bits != "W32A32"]
    for bits in bits_order(quantized.bits):
        at_bits = quantized[quantized.bits == bits]
        reference_rows = at_bits[at_bits.method == REFERENCE]
        reference = correctness(results, reference_rows) if not reference_rows.empty else None
        for method in METHOD_ORDER:
            group = at_bits[at_bits.method == method]
            if group.empty:
                continue
            cells = [
                _spread(group.deployed),
                _spread(group.nll, 4) if "nll" in group else "—",
                _spread(group.fp - group.deployed),
                _versus(reference, group, method, results),
            ]
            lines.append(f"| {bits} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: Path, dataset: str) -> None:
    keep_correctness(results, dataset)
    rows = latest_rows(results, dataset)
    for model, model_rows in rows.groupby("model", sort=False):
        floats = model_rows[model_rows.bits == "W32A32"]
        float_line = (
            f"float top1 {floats.fp.iloc[-1]:.2f}, NLL {floats.nll.iloc[-1]:.4f} "
            f"(`{floats.command.iloc[-1]}`)"
            if not floats.empty
            else f"float top1 {model_rows.fp.iloc[-1]:.2f}"
        )
        shas = ", ".join(sorted(model_rows.git_sha.astype(str).unique()))
        print(f"### {dataset}, {model}\n\n{float_line}; {len(model_rows)} rows, code {shas}.\n")
        print(model_table(model_rows, results) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--preset", default="bench_fashion")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--redo", action="store_true", help="run again what already has a row (run: skipped)"
    )
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.preset, args.jobs, args.redo)
    else:
        table(args.results, args.dataset)


if __name__ == "__main__":
    main()
