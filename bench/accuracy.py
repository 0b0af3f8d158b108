"""Accuracy of every method and Brevitas on shared float models, with the noise stated.

    python bench/accuracy.py run [--preset bench_fashion] [--jobs 2]
    python bench/accuracy.py table [--dataset fashion_mnist]

`run` takes a sweep preset of conf/sweep/ and runs, in order: the float model of each of its
models (`gdrq-run bits=32` with the preset's overrides, --jobs at once), so every later run
finds it in the cache; then grid by grid, the grid's runs (one `gdrq-run` each, the runs
`gdrq-sweep PRESET` would make) and the same runs through Brevitas (bench/brevitas_qat.py)
instead of the project's methods, so a preset that lists its most telling grid first (one seed
at every width) has a complete table early. --jobs processes of one thread each, as the sweep
runs its jobs. A run whose data set, model, method, bit-width and seed already have a row in
bench/results is skipped (`--redo` runs it again): a stopped bench resumes where it stopped.

`table` reads bench/results/classification.csv, keeps the latest row of each data set, model,
method, bit-width and seed (a rerun replaces earlier numbers), and prints per model: the float
model, then per bit-width and method the deployed top1 (folded; quantized for Brevitas) as mean
± sample std (n seeds), the validation NLL, and the difference to GDRQ with its 95% interval
from a paired bootstrap (`paired_bootstrap`). A difference "exceeds the noise" when its interval
excludes 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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


def float_commands(preset_name: str, jobs: int) -> list[list[str]]:
    """One float run per model of the preset's grids (the default model if none names one)."""
    runs = _grid_runs(preset_name)
    models = sorted({arg for run in runs for arg in run if arg.startswith("model=")})
    common = [GDRQ_RUN, *_common(preset_name, jobs), "bits=32"]
    return [[*common, model] for model in models] if models else [common]


def brevitas_commands(preset_name: str, jobs: int, grid: DictConfig) -> list[list[str]]:
    """One grid with Brevitas in place of the methods, one command per run."""
    common = _common(preset_name, jobs)
    runs = {tuple(a for a in run if not a.startswith("method=")) for run in _runs_of(grid)}
    return [[sys.executable, BREVITAS_QAT, *common, *run] for run in sorted(runs)]


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
    """The (model, method, WxAy, seed) that already have a row of `dataset`."""
    if not results.is_file():
        return set()
    rows = latest_rows(results, dataset)
    return set(zip(rows.model, rows.method, rows.bits, rows.seed.astype(int), strict=True))


def _run_all(commands: list[list[str]], jobs: int, what: str) -> None:
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(lambda command: subprocess.run(command).returncode, commands))
    failed = [" ".join(c[1:]) for c, code in zip(commands, codes) if code != 0]
    if failed:
        sys.exit(f"bench/accuracy.py: {what} failed: " + "; ".join(failed))


def run(preset_name: str, jobs: int, redo: bool = False) -> None:
    """The float runs, then grid by grid its runs and their Brevitas twins; a run whose row is
    already in the results table is skipped unless `redo` (a stopped bench resumes)."""
    _run_all(float_commands(preset_name, jobs), jobs, "float runs")
    preset = load_preset(preset_name)
    dataset = dict(str(o).split("=", 1) for o in preset.overrides).get("dataset", "digits")
    finished = set() if redo else finished_runs(RESULTS, dataset)
    for number, grid in enumerate(preset.grids, 1):
        commands = [
            *method_commands(preset_name, jobs, grid),
            *brevitas_commands(preset_name, jobs, grid),
        ]
        todo = [command for command in commands if run_name(command) not in finished]
        print(
            f"bench/accuracy.py: grid {number}/{len(preset.grids)}: {len(todo)} runs "
            f"({len(commands) - len(todo)} already in {RESULTS})",
            file=sys.stderr,
            flush=True,
        )
        _run_all(todo, jobs, f"grid {number}")


def latest_rows(results: Path, dataset: str) -> pd.DataFrame:
    rows = pd.read_csv(results)
    rows = rows[rows.dataset == dataset].copy()
    rows["bits"] = "W" + rows.w_bits.astype(str) + "A" + rows.a_bits.astype(str)
    rows["deployed"] = rows.folded.fillna(rows.quant)  # Brevitas has no folded model
    return rows.drop_duplicates(["model", "method", "bits", "seed"], keep="last")


def bits_order(bits: pd.Series) -> list[str]:
    """Widest first: W8A8, W4A4, W3A3, W2A4."""
    return sorted(bits.unique(), key=lambda b: (-int(b[1:].split("A")[0]), -int(b.split("A")[1])))


def correctness(rows: pd.DataFrame) -> np.ndarray | None:
    """(seeds x images) booleans: each run's final model right on each test image, from the
    predictions.json of its run directory; None when a run directory is gone."""
    vectors = []
    for run_dir in rows.run_dir:
        path = Path(run_dir) / "predictions.json"
        if not path.is_file():
            return None
        written = json.loads(path.read_text())
        vectors.append(np.asarray(written["predicted"]) == np.asarray(written["target"]))
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


def _versus(reference: np.ndarray | None, group: pd.DataFrame, method: str) -> str:
    if method == REFERENCE:
        return "—"
    other = correctness(group)
    if reference is None or other is None:
        return "n/a (run directories gone)"
    difference, low, high = paired_bootstrap(reference, other)
    beyond = "**" if low > 0 or high < 0 else ""
    return f"{beyond}{difference:+.2f} [{low:+.2f}, {high:+.2f}]{beyond}"


def model_table(rows: pd.DataFrame) -> str:
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
        reference = correctness(reference_rows) if not reference_rows.empty else None
        for method in METHOD_ORDER:
            group = at_bits[at_bits.method == method]
            if group.empty:
                continue
            cells = [
                _spread(group.deployed),
                _spread(group.nll, 4) if "nll" in group else "—",
                _spread(group.fp - group.deployed),
                _versus(reference, group, method),
            ]
            lines.append(f"| {bits} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: Path, dataset: str) -> None:
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
        print(model_table(model_rows) + "\n")


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
