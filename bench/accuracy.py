"""Accuracy of every method and Brevitas on shared float models, with the noise stated.

    python bench/accuracy.py run [--preset bench_fashion] [--jobs 2]
    python bench/accuracy.py table [--preset bench_fashion] [--dataset D] [--results DIR]

`run` takes a sweep preset of conf/sweep/ and runs the float model of each of its models
(`gdrq-run bits=32` with the preset's overrides and the grid's float recipe; not where its
row is kept and its model is in the float cache, which would only copy the row), then grid by grid
the grid's runs (one `gdrq-run` each, the runs `gdrq-sweep PRESET` would make) and, for the
grids the preset's `brevitas_grids` lists (default: all), the same runs through Brevitas
(`gdrq-run method=brevitas`) instead of the project's methods, so a preset that lists its most
telling grids first (one seed at every width) has a complete table early. Rows go to the
preset's results_dir. --jobs processes of one thread each, as the sweep runs its jobs; a free
slot takes the first waiting run whose float model is built, so no run waits behind another
model's float. Every command carries trainer.resume=true: a run killed mid-stage continues
from its last epoch's checkpoint. Each finished run's per-image right/wrong is kept in
correct/<run_id>.json beside the results table (run directories are not committed; the
intervals need these). A command whose run already has a row and a kept vector is skipped
(`--redo` runs it again): a stopped bench resumes where it stopped. A row is the command's run
when its spec_hash is the one the command composes to in this checkout and its other overrides
(all but method, grouping and bits, and `trainer.resume=`) are the command's: a row made under
an earlier default (same command, another effective spec) is run again, and a preset that pins
a knob at the value its rows were made with keeps them.

`table` reads the preset's results table, keeps the latest row of each configuration (its
spec_hash: the effective spec and fine-tuning recipe), float model (fp_hash) and seed (a rerun
replaces earlier numbers; two configurations of one method are two lines, never one mean,
each named by the spec knobs that differ, e.g. `gdrq act_stat=mse`), and
prints per model and float model, one table per fine-tuning budget: per bit-width and method
the deployed top1 (folded; quantized for Brevitas) as mean ± sample std (n seeds), the test
NLL, drop and drop_ft (against the equal-budget float control), and the difference to GDRQ (of
the seed means) with its 95% interval from bench/intervals.py, which holds both the test
images' noise and the seeds': the per-seed differences (seed s of the method minus seed s of
GDRQ, on the same test images; where the two have different seeds, their seed means taken as
independent) give the seeds' term s_d^2 / n, the per-image differences of the seed means the
test images' term (net of the per-image flips the seeds' term already holds), and the interval
is a t interval on the sum with Welch-Satterthwaite degrees of freedom: with 3 seeds its
quantile approaches t(0.975, 2) = 4.30 where the seeds' noise dominates, then a run's median
training seconds (post-training: calibration). A difference "exceeds the noise" (bold) when its
interval excludes 0. A cell with one seed cannot measure its seeds'
noise: it borrows the seed spread of the per-seed differences to GDRQ pooled over the network's
cells with >= 2 seeds, cells where a method collapsed left out (`pooled_spread`; marked †, a
footnote names the cells), or, where there is none, holds the test images' noise only (marked
‡). Under each table, where the runs held training images out (dataset.holdout), the
validation-split table. A preset with `validation_only: true` (one that chooses knobs) prints
the validation-split tables alone; a preset's `goals` (a method: the widths where it must not
beat GDRQ) add, under each test-split table, whether each goal's interval holds 0 or lies
below it; its `contrasts` (pairs of lines) add each pair's difference with its interval. A
preset that `chooses` a knob (bench/knob_choice.py) prints, last, each value's
mean validation top1 per network and the value its rule picks.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gdrq_bench.cli.sweep import GDRQ_RUN, load_preset, threads_per_job
from gdrq_bench.config import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config.schema import CalibrateConfig
from gdrq_bench.quant import METHODS
from gdrq_bench.reporting.results import COLUMNS, SPEC_COLUMNS
from gdrq_bench.run.fp import float_cache_path
from gdrq_bench.run.keys import AFTER_FLOAT_TRAINER_KEYS, spec_hash
from gdrq_bench.run.spec import build_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/intervals.py, when imported
from intervals import Interval, PooledSpread, compare, pool_spreads
from knob_choice import KnobRule, choice_text

METHOD_ORDER = list(METHODS)  # the registry's order: the project's methods, then Brevitas
BREVITAS = "method=brevitas"
REFERENCE = "gdrq"
ADAROUND = "+adaround"  # a post-training line with learned rounding (trainer.calibrate)
ACT_RANGE = "act="  # a post-training line whose activation range is not the default
# group clips that post-training quantization sets by the QL_2 search: a learned clip starts
# from the search (group_clips.LearnedClip) and is never trained
SEARCHED_CLIPS = ("search", "learned")
BORROWED, IMAGES_ONLY = "†", "‡"  # a one-seed cell's seed spread: pooled; missing
COLLAPSED = 0.5  # a cell whose mean top1 is below this share of the float's: not pooled
CLASSIFICATION = "classification.csv"  # the task whose runs keep per-image results
RESUME = "trainer.resume=true"  # not in the run key: the same run, continued
POLL_S = 1.0  # how often run_jobs looks for finished runs


def results_dir_of(preset_name: str) -> Path:
    """Where a preset's runs append their rows (its results_dir override): a table per task."""
    overrides = dict(str(o).split("=", 1) for o in load_preset(preset_name).overrides)
    return Path(overrides.get("results_dir", "results"))


def without_resume(command: str) -> str:
    """A recorded command without its `trainer.resume=` (it cannot change a number: rows
    from before the bench resumed its runs name the same run)."""
    return shlex.join(arg for arg in shlex.split(command) if not arg.startswith("trainer.resume="))


def recorded(command: list[str]) -> str:
    """A command as its row records it, `trainer.resume=` left out: `gdrq-run` and its
    overrides (command[0] is its full path)."""
    return without_resume(shlex.join(["gdrq-run", *command[1:]]))


def _common(preset_name: str, jobs: int) -> list[str]:
    """The preset's overrides, the thread count of its jobs (the float cache key holds it)
    and trainer.resume=true: a bench run killed mid-stage continues from its last epoch."""
    preset = load_preset(preset_name)
    return [*map(str, preset.overrides), f"trainer.threads={threads_per_job(jobs)}", RESUME]


def _runs_of(grid: DictConfig) -> list[list[str]]:
    """Every run of one grid as a list of key=value overrides."""
    axes = [[f"{key}={v}" for v in str(values).split(",")] for key, values in grid.items()]
    return [list(combination) for combination in itertools.product(*axes)]


def _grid_runs(preset_name: str) -> list[list[str]]:
    """Every run of the preset's grids."""
    return [run for grid in load_preset(preset_name).grids for run in _runs_of(grid)]


# what varies between runs sharing a float model: the method and its knobs, bits, seed,
# grouping and the trainer's keys that act after the float stage (e.g. a longer fine-tuning
# budget)
FLOAT_AXES = (
    "method=",
    "method.",
    "bits=",
    "bits.",
    "seed=",
    "grouping=",
    "grouping.",
    *(f"trainer.{key}{end}" for key in AFTER_FLOAT_TRAINER_KEYS for end in ("=", ".")),
)


def float_key(command: list[str]) -> tuple[str, ...]:
    """The overrides of a command that shape its float model: all but FLOAT_AXES (a grid may
    give its model a longer float recipe, e.g. trainer.fp.epochs)."""
    return tuple(arg for arg in command if "=" in arg and not arg.startswith(FLOAT_AXES))


# overrides a float run (bits=32) does not read: left out of its command, so it stays the
# command the float recipe's rows record
NOT_READ_BY_FLOAT_RUNS = ("trainer.eval_quant=",)


def float_commands(preset_name: str, jobs: int) -> list[list[str]]:
    """One float run per float model of the preset's grids (the default model if none names
    one), in the grids' order."""
    keys = dict.fromkeys(float_key(run) for run in _grid_runs(preset_name))
    overrides = _common(preset_name, jobs)
    kept = [arg for arg in overrides if not arg.startswith(NOT_READ_BY_FLOAT_RUNS)]
    common = [GDRQ_RUN, *kept, "bits=32"]
    return [[*common, *key] for key in keys]


def brevitas_commands(preset_name: str, jobs: int, grid: DictConfig) -> list[list[str]]:
    """One grid with Brevitas (method=brevitas) in place of the methods, one command per run."""
    common = [GDRQ_RUN, *_common(preset_name, jobs)]
    runs = dict.fromkeys(
        tuple(a for a in run if not a.startswith("method=")) for run in _runs_of(grid)
    )
    return [[*common, BREVITAS, *run] for run in runs]


def method_commands(preset_name: str, jobs: int, grid: DictConfig) -> list[list[str]]:
    """One grid's gdrq-run commands, one per run."""
    common = [GDRQ_RUN, *_common(preset_name, jobs)]
    return [[*common, *run] for run in _runs_of(grid)]


def task_tables(results_dir: Path) -> list[Path]:
    """The results tables of `results_dir`, one per task (none if it does not exist yet)."""
    return sorted(results_dir.glob("*.csv"))


# overrides whose effect a row's spec_hash records: a finished run is matched on its spec_hash
# and the rest of its command
SPEC_OVERRIDES = ("method=", "method.", "grouping=", "grouping.", "bits=", "bits.")


def run_identity(command: str) -> str:
    """A recorded command without the overrides its spec_hash stands for (and trainer.resume=)."""
    arguments = shlex.split(without_resume(command))
    return shlex.join(arg for arg in arguments if not arg.startswith(SPEC_OVERRIDES))


def finished_runs(results_dir: Path) -> dict[str, set[str]]:
    """The runs that already have a latest row in one of results_dir's tables and, for
    classification, their per-image results kept (a row whose vector was lost is run again:
    the table's intervals need it): the spec_hashes of the rows of each run_identity."""
    finished: dict[str, set[str]] = {}
    for results in task_tables(results_dir):
        rows = latest_rows(results)
        if results.name == CLASSIFICATION:
            rows = rows[[kept_path(results, run_id).is_file() for run_id in rows.run_id]]
        # rows from before spec_hash have none (an all-empty float column)
        for command, spec in zip(rows.command, rows.spec_hash.astype(object).fillna("")):
            finished.setdefault(run_identity(command), set()).add(str(spec))
    return finished


def other_thread_counts(results_dir: Path, jobs: int) -> list[str]:
    """The `trainer.threads` values of results_dir's rows when none of them is the one this
    call's runs get (the cores over `jobs`): the thread count is in the float model's key and
    the rows' commands, so such rows finish no run of this call. Empty otherwise."""
    threads = set()
    for results in task_tables(results_dir):
        for command in pd.read_csv(results).command:
            threads |= {arg for arg in shlex.split(command) if arg.startswith("trainer.threads=")}
    ours = f"trainer.threads={threads_per_job(jobs)}"
    return [] if ours in threads else sorted(threads)


def note_other_thread_counts(results_dir: Path, jobs: int, script: str) -> None:
    """Say, before a bench starts, that the rows in results_dir will not count (see
    other_thread_counts)."""
    others = other_thread_counts(results_dir, jobs)
    if others:
        print(
            f"{script}: note: the rows in {results_dir} ran at {', '.join(others)}; --jobs "
            f"{jobs} on {os.cpu_count()} cores runs at trainer.threads={threads_per_job(jobs)}"
            ", so none of them counts and the float models train again: stop and pass the "
            "--jobs they ran with to resume them",
            file=sys.stderr,
            flush=True,
        )


def composed(command: list[str]) -> DictConfig:
    """The config a gdrq-run command composes to with this checkout's code and defaults."""
    overrides = [quote_numeric_choice(argument) for argument in command[1:]]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def composed_spec_hash(command: list[str]) -> str:
    """The spec_hash a command's row gets with this checkout's code and defaults."""
    cfg = composed(command)
    return spec_hash(cfg, build_spec(cfg))


def float_model_cached(command: list[str]) -> bool:
    """Whether the float model a command shapes is in the cache (its key holds the thread
    count the command's run sets)."""
    cfg = composed(command)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.trainer.threads or threads)
    try:
        return float_cache_path(cfg).is_file()
    finally:
        torch.set_num_threads(threads)


def is_finished(command: list[str], finished: dict[str, set[str]]) -> bool:
    """Whether a command has a kept row of what it means now: a row of its run_identity whose
    spec_hash is the command's (a default changed since the row was made gives the same
    command another spec, and the command runs again)."""
    hashes = finished.get(run_identity(recorded(command)))
    return bool(hashes) and composed_spec_hash(command) in hashes


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
    """The float runs not yet done (row kept, model cached), then grid by grid its runs and
    their Brevitas twins, each run started as soon as its float model is built; a run whose
    row and per-image results are already kept is skipped unless `redo` (a stopped bench
    resumes)."""
    preset, results_dir = load_preset(preset_name), results_dir_of(preset_name)
    results = results_dir / CLASSIFICATION
    keep_correctness(results)
    finished = {} if redo else finished_runs(results_dir)
    if not redo:
        note_other_thread_counts(results_dir, jobs, "bench/accuracy.py")
    # a float run whose row is kept and whose model is cached would only add a copy of its row
    floats = [
        command
        for command in float_commands(preset_name, jobs)
        if not (is_finished(command, finished) and float_model_cached(command))
    ]
    queue = [Job(command, gives=float_key(command)) for command in floats]
    twins = preset.get("brevitas_grids", range(len(preset.grids)))
    grids = [
        [
            *method_commands(preset_name, jobs, grid),
            *(brevitas_commands(preset_name, jobs, grid) if index in twins else []),
        ]
        for index, grid in enumerate(preset.grids)
    ]
    todo = [c for commands in grids for c in commands if not is_finished(c, finished)]
    to_build = {float_key(command) for command in floats}
    queue += [
        Job(command, needs=float_key(command) if float_key(command) in to_build else None)
        for command in todo
    ]
    done = sum(map(len, grids)) - len(todo)
    print(
        f"bench/accuracy.py: {len(floats)} float and {len(todo)} quantized runs to go "
        f"({done} already in {results_dir})",
        file=sys.stderr,
        flush=True,
    )
    failed = run_jobs(queue, jobs, after_each=lambda: keep_correctness(results))
    if failed:
        sys.exit("bench/accuracy.py: runs failed: " + "; ".join(failed))


def latest_rows(results: Path, dataset: str | None = None) -> pd.DataFrame:
    """The latest row of each configuration, float model and seed (of `dataset`; None: of
    every data set) in a results table (a table of an earlier version reads with the newer
    columns empty; rows marked failed are left out)."""
    rows = pd.read_csv(results).reindex(columns=COLUMNS)
    if dataset is not None:
        rows = rows[rows.dataset == dataset]
    rows = rows[rows.failed.isna()].copy()
    rows["bits"] = "W" + rows.w_bits.astype(str) + "A" + rows.a_bits.astype(str)
    rows["deployed"] = rows.folded.fillna(rows.quant)  # Brevitas has no folded model
    ptq = rows.schedule == "ptq"
    rows.loc[ptq, "method"] = ptq_variants(rows[ptq])
    # a configuration: its spec_hash (rows from before it: model, method and bits), within
    # one float model (fp_hash) and fine-tuning budget
    named = rows.model + " " + rows.method + " " + rows.bits
    rows["config"] = rows.spec_hash.astype(object).fillna(named)
    rows["float_model"] = rows.fp_hash.astype(object).fillna("")
    rows["budget"] = _budgets(rows)
    rows = rows.drop_duplicates(["model", "float_model", "bits", "config", "seed"], keep="last")
    # two configurations of one method, width and budget: never one mean, each its own line
    cell = ["model", "float_model", "budget", "bits", "method"]
    for _, group in rows.groupby(cell, dropna=False):
        if group.config.nunique() > 1:
            rows.loc[group.index, "method"] = group.method + " " + knob_labels(group)
    return rows


def knob_labels(group: pd.DataFrame) -> pd.Series:
    """What sets apart the configurations of one line's rows: the spec knobs whose values
    differ between them (`act_stat=mse`), or, where no knob column does (a fine-tuning
    recipe, rows from before the columns), the start of the spec hash (`(spec 1a2b3c4d)`)."""
    knobs = group[SPEC_COLUMNS].astype(str)
    varying = [column for column in SPEC_COLUMNS if knobs[column].nunique() > 1]
    spec = "(spec " + group.config.str[:8] + ")"
    if not varying:
        return spec
    named = knobs[varying].apply(
        lambda row: " ".join(f"{k}={'—' if v == 'nan' else v}" for k, v in row.items()), axis=1
    )
    alike = group.groupby(named).config.transform("nunique") > 1  # knobs alike, specs not
    return named.where(~alike, named + " " + spec)


def ptq_variants(rows: pd.DataFrame) -> pd.Series:
    """Each post-training row's line: its method, then what sets it apart where it varies
    (grouping's groups and clip rule for groups_only), then its calibration where it is not
    gdrq-run's default (an activation range other than mse, `act=max`; BN re-estimation;
    bias correction; learned rounding), e.g. `groups_only per_channel max act=max +adaround`."""
    default_range = CalibrateConfig().act_range

    def variant(row: pd.Series) -> str:
        parts = [row.method]
        if row.method == "groups_only":
            parts.append(str(row.groups))
            if row.alpha_mode not in SEARCHED_CLIPS:
                parts.append(str(row.alpha_mode))
        if row.act_range != default_range:
            parts.append(f"{ACT_RANGE}{row.act_range}")
        if str(row.get("bn_reestimate")).lower() == "true":  # tables from before: no column
            parts.append("+bn")
        if str(row.bias_correction).lower() == "true":
            parts.append("+bias")
        if str(row.rounding).startswith("adaround"):
            parts.append(ADAROUND)
        return " ".join(parts)

    return rows.apply(variant, axis=1) if len(rows) else rows.method


def reference_of(method: str) -> str:
    """The line a method's is compared with: GDRQ's, calibrated the same way (its activation
    range, bias correction and rounding: the line's words from the first `act=` or `+`)."""
    words = method.split(" ")
    calibration = [i for i, word in enumerate(words) if word.startswith((ACT_RANGE, "+"))]
    return " ".join([REFERENCE, *words[calibration[0] :]]) if calibration else REFERENCE


def _budgets(rows: pd.DataFrame) -> pd.Series:
    """Each row's fine-tuning budget in words (float rows: empty; post-training rows: none)."""
    epochs = rows.finetune_epochs.fillna(0).astype(int)
    batches = rows.finetune_batches.map(lambda n: "" if pd.isna(n) else f" of {int(n)} batches")
    calibrated = rows.schedule == "ptq"
    return pd.Series(
        [
            "none (post-training quantization)" if ptq else f"{e} epochs{b}" if e else ""
            for e, b, ptq in zip(epochs, batches, calibrated, strict=True)
        ],
        index=rows.index,
    )


def methods_in(rows: pd.DataFrame) -> list[str]:
    """The methods of `rows` in the registry's order, then Brevitas; a method's configurations
    that share a width and budget (labelled `method (spec ...)`) beside it."""
    return sorted(rows.method.unique(), key=lambda m: (METHOD_ORDER.index(m.split(" ")[0]), m))


def bits_order(bits: pd.Series) -> list[str]:
    """Widest first: W8A8, W4A4, W3A3, W2A4."""
    return sorted(bits.unique(), key=lambda b: (-int(b[1:].split("A")[0]), -int(b.split("A")[1])))


def kept_path(results: Path, run_id: str) -> Path:
    """Where a run's per-image right/wrong is kept, beside the results table: run directories
    are not committed, and the intervals need these vectors on any machine that makes the
    table."""
    return results.parent / "correct" / f"{run_id}.json"


def keep_correctness(results: Path) -> None:
    """Keep each latest row's per-image right/wrong (bits, base64) from its run directory's
    predictions.json, where it is not kept yet."""
    if not results.is_file():
        return
    rows = latest_rows(results)
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


def _spread(values: pd.Series, digits: int = 2) -> str:
    """'mean' for one value, 'mean ± sample std (n)' for several; '—' where not measured."""
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f} (1)"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f} ({len(values)})"


Seeded = tuple[list[int], np.ndarray | None]  # a cell's seeds in order, their right/wrong


def _by_seed(rows: pd.DataFrame, results: Path) -> Seeded:
    """A cell's seeds in order and their (seeds x images) right/wrong in that order."""
    if rows.empty:
        return [], None
    rows = rows.sort_values("seed")
    return rows.seed.astype(int).tolist(), correctness(results, rows)


def _shared_seeds(reference: Seeded, other: Seeded) -> tuple[np.ndarray, np.ndarray]:
    """Both cells' rows of the seeds they share, paired by seed."""
    shared = sorted(set(reference[0]) & set(other[0]))
    pick = [[seeds.index(seed) for seed in shared] for seeds in (reference[0], other[0])]
    return reference[1][pick[0]], other[1][pick[1]]


def _collapsed(group: pd.DataFrame) -> bool:
    return group.deployed.mean() < COLLAPSED * group.fp.mean()


def pooled_spread(quantized: pd.DataFrame, results: Path) -> tuple[PooledSpread | None, list[str]]:
    """The seed spread of the per-seed difference to GDRQ (calibrated alike: reference_of) pooled
    over one network's cells
    (bit-width, method) where the two share >= 2 seeds (paired by seed), and the cells left
    out as collapsed: where either method's mean top1 is below half the float model's. A
    collapsed method's seeds differ by which classes survive, tens of points (ResNet-20
    min-max at W2A4: 44 to 78 points below GDRQ), against tenths for working ones, and one
    such cell would set every one-seed interval of the network."""
    cells, collapsed = {}, []
    for bits in bits_order(quantized.bits):
        at_bits = quantized[quantized.bits == bits]
        for method in methods_in(at_bits):
            group = at_bits[at_bits.method == method]
            if method == reference_of(method) or group.empty:
                continue
            reference_rows = at_bits[at_bits.method == reference_of(method)]
            reference = _by_seed(reference_rows, results)
            other = _by_seed(group, results)
            if reference[1] is None or other[1] is None:
                continue
            pair = _shared_seeds(reference, other)
            if len(pair[0]) < 2:
                continue
            if _collapsed(group) or _collapsed(reference_rows):
                collapsed.append(f"{bits} {method}")
            else:
                cells[f"{bits} {method}"] = pair
    return pool_spreads(cells), collapsed


def _versus(reference: Seeded, other: Seeded, pooled: PooledSpread | None) -> Interval | None:
    if reference[1] is None or other[1] is None:
        return None
    return compare(reference[1], other[1], paired=reference[0] == other[0], pooled=pooled)


def _cell(interval: Interval | None) -> str:
    """The 'vs GDRQ' cell: bold where the interval excludes 0, then the one-seed marker."""
    if interval is None:
        return "n/a (per-image results not kept)"
    bold = "**" if interval.excludes_zero else ""
    return f"{bold}{_interval_text(interval)}{bold}{_seed_marker(interval)}"


def _interval_text(interval: Interval) -> str:
    return f"{interval.difference:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


def _seed_marker(interval: Interval) -> str:
    """† where a one-seed side borrows its seed spread, ‡ where it holds the images' noise."""
    return {"seeds": "", "pooled": BORROWED, "images": IMAGES_ONLY}[interval.seed_noise]


def _seconds(values: pd.Series) -> str:
    """Median seconds, to a tenth below 10 s (a calibration), else whole; — where none. A
    median: a run that shared the cores with other work can take several times its usual
    time, and one such run would move a mean of three."""
    median = values.median()
    return "—" if pd.isna(median) else f"{median:.1f}" if median < 10 else f"{median:.0f}"


def interval_to_reference(
    at_bits: pd.DataFrame, method: str, results: Path, pooled: PooledSpread | None
) -> Interval | None:
    """One width's interval of `method` minus GDRQ calibrated alike (None: a vector not
    kept)."""
    return interval_between(at_bits, method, reference_of(method), results, pooled)


def interval_between(
    at_bits: pd.DataFrame, line: str, against: str, results: Path, pooled: PooledSpread | None
) -> Interval | None:
    """One width's interval of line `line` minus line `against` (None: a vector not kept)."""
    sides = (at_bits[at_bits.method == name] for name in (against, line))
    return _versus(*(_by_seed(side, results) for side in sides), pooled)


def model_table(rows: pd.DataFrame, results: Path) -> str:
    """Per bit-width and method: seeds, deployed top1, NLL, drop (from the float model), drop_ft
    (from the float model fine-tuned for the same budget: the quantization's loss alone; — in
    rows without the control), the difference to GDRQ at that bit-width (bold where its
    interval excludes 0; † where a one-seed cell borrows its seed spread, ‡ where it holds the
    test images' noise only) and a run's median training seconds (post-training: calibration),
    then the markers' footnotes."""
    lines = [
        "| bits | method | top1 (n) | NLL | drop | drop_ft | vs GDRQ [95% CI] | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    quantized = rows[rows.bits != "W32A32"]
    pooled, collapsed = pooled_spread(quantized, results)
    markers = set()
    for bits in bits_order(quantized.bits):
        at_bits = quantized[quantized.bits == bits]
        for method in methods_in(at_bits):
            group = at_bits[at_bits.method == method]
            if group.empty:
                continue
            versus = "—"
            if reference_of(method) not in set(at_bits.method):
                versus = "no GDRQ row yet"
            elif method != reference_of(method):
                interval = interval_to_reference(at_bits, method, results, pooled)
                versus = _cell(interval)
                markers.add(interval.seed_noise if interval is not None else None)
            cells = [
                _spread(group.deployed),
                _spread(group.nll, 4) if "nll" in group else "—",
                _spread(group.fp - group.deployed),
                _spread(group.fp_ft - group.deployed),  # against the equal-budget float control
                versus,
                _seconds(group.train_s),
            ]
            lines.append(f"| {bits} | {method} | " + " | ".join(cells) + " |")
    notes = []
    if "pooled" in markers:
        notes.append(_borrowed_note(pooled, collapsed))
    if "images" in markers:
        notes.append(
            f"{IMAGES_ONLY} One seed, and no comparison with GDRQ on this network with >= 2 "
            "seeds (collapsed methods aside) to borrow a seed spread from: the interval holds "
            "the test images' noise only."
        )
    return "\n".join(lines + (["", *notes] if notes else []))


Goals = dict[str, list[str]]  # a method: the widths where it must not beat GDRQ (W4A4, ...)


def goals_table(quantized: pd.DataFrame, results: Path, goals: Goals) -> str:
    """Whether GDRQ holds against the methods a preset's `goals` names: at each listed width
    present in `quantized` (one budget of one network), the goal is met where the interval of
    the method minus GDRQ (the tables' interval) holds 0 or lies below it, not met where it
    lies above 0 (the method beats GDRQ beyond the noise), `not run` where a side has no
    rows (counted apart in the last column: a budget's grid may leave a goal's method out)."""
    pooled, _ = pooled_spread(quantized, results)
    present = bits_order(quantized.bits)
    widths = [bits for bits in present if any(bits in at for at in goals.values())]
    lines = [
        "GDRQ's goals (the preset's `goals`): met where the interval of the method minus GDRQ "
        "holds 0 or lies below it.",
        "",
        f"| method minus GDRQ | {' | '.join(widths)} | met |",
        "|---|" + "---:|" * (len(widths) + 1),
    ]
    for method, at in goals.items():
        cells, met, checked = [], 0, 0
        for bits in widths:
            at_bits = quantized[quantized.bits == bits]
            if bits not in at:
                cells.append("")
                continue
            if not {method, reference_of(method)} <= set(at_bits.method):
                cells.append("not run")
                continue
            interval = interval_to_reference(at_bits, method, results, pooled)
            if interval is None:
                cells.append("n/a (per-image results not kept)")
                continue
            checked += 1
            met += interval.low <= 0
            verdict = "met" if interval.low <= 0 else "**not met**"
            cells.append(f"{verdict} {_interval_text(interval)}{_seed_marker(interval)}")
        not_run = cells.count("not run")
        count = f"{met} of {checked}" + (f", {not_run} not run" if not_run else "")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {count} |")
    return "\n".join(lines)


Contrasts = list[tuple[str, str]]  # (a line, the line it is measured against)


def contrast_table(quantized: pd.DataFrame, results: Path, contrasts: Contrasts) -> str:
    """A preset's `contrasts` (pairs of lines, e.g. the QL_2 search against min-max): at each
    width of `quantized` (one budget of one network), the first line's top1 minus the
    second's with the tables' interval (seeds paired; **bold** where it excludes 0), `—`
    where a side has no rows; the last column names the widths whose interval lies above or
    below 0 (the sentences a summary may take from the row)."""
    widths = bits_order(quantized.bits)
    lines = [
        "Contrasts (the preset's `contrasts`): the first line's top1 minus the second's, 95% "
        "interval over seeds and test images, **bold** where it excludes 0.",
        "",
        f"| line minus line | {' | '.join(widths)} | beyond the noise |",
        "|---|" + "---:|" * len(widths) + "---|",
    ]
    for line, against in contrasts:
        intervals: dict[str, Interval | None] = {}
        for bits in widths:
            at_bits = quantized[quantized.bits == bits]
            if {line, against} <= set(at_bits.method):
                intervals[bits] = interval_between(at_bits, line, against, results, None)
        cells = [_cell(intervals[bits]) if bits in intervals else "—" for bits in widths]
        lines.append(
            f"| {line} minus {against} | " + " | ".join([*cells, _beyond_noise(intervals)]) + " |"
        )
    return "\n".join(lines)


def _beyond_noise(intervals: dict[str, Interval | None]) -> str:
    """`higher at W4A8, W4A4; lower at W2A8`: the widths whose interval excludes 0, by sign;
    `none` where every measured one holds 0, `—` where none was measured."""
    measured = {bits: interval for bits, interval in intervals.items() if interval is not None}
    if not measured:
        return "—"
    higher = [bits for bits, interval in measured.items() if interval.low > 0]
    lower = [bits for bits, interval in measured.items() if interval.high < 0]
    parts = [f"{word} at {', '.join(at)}" for word, at in (("higher", higher), ("lower", lower))]
    return "; ".join(part for part, at in zip(parts, (higher, lower), strict=True) if at) or "none"


def _borrowed_note(pooled: PooledSpread, collapsed: list[str]) -> str:
    """The † footnote: the cells the borrowed seed spread is pooled from, by bit-width."""

    def by_bits(cells: list[str]) -> str:
        methods: dict[str, list[str]] = {}
        for cell in cells:
            bits, method = cell.split(" ", 1)
            methods.setdefault(bits, []).append(method)
        return "; ".join(f"{bits} {', '.join(names)}" for bits, names in methods.items())

    left_out = (
        f"; left out as collapsed (a mean top1 below half the float model's): {by_bits(collapsed)}"
        if collapsed
        else ""
    )
    return (
        f"{BORROWED} One seed: its seeds' noise is borrowed, the seed spread of the per-seed "
        "differences to GDRQ (seeds paired by index, net of the per-image flips) pooled over "
        f"this network's cells with >= 2 seeds ({pooled.df:.0f} df): "
        f"{by_bits(list(pooled.cells))}{left_out}."
    )


def tables(
    results_dir: Path,
    dataset: str | None = None,
    validation_only: bool = False,
    goals: Goals | None = None,
    contrasts: Contrasts | None = None,
) -> None:
    """The tables of every task table in results_dir (of `dataset` only, if given):
    classification's with the intervals (and the `goals` and `contrasts` tables), the other
    tasks' with their metric's spread (`validation_only`: classification's validation-split
    tables alone)."""
    found = task_tables(results_dir)
    if not found:
        print(f"No rows in {results_dir} yet: bench/accuracy.py run makes them.")
    for results in found:
        if results.name == CLASSIFICATION:
            table(results, dataset, validation_only, goals, contrasts)
        else:
            scores_table(results, dataset)


def table(
    results: Path,
    dataset: str | None = None,
    validation_only: bool = False,
    goals: Goals | None = None,
    contrasts: Contrasts | None = None,
) -> None:
    """Per network and float model, a table per fine-tuning budget (the longer-budget grid's
    apart), each followed by its goals and contrasts tables (where given) and its validation-split
    table where the runs held images out (`validation_only`: that table alone, for grids that
    choose a knob: no test figure)."""
    keep_correctness(results)
    rows = latest_rows(results, dataset)
    for (model, _), model_rows in rows.groupby(["model", "float_model"], sort=False):
        floats = model_rows[model_rows.bits == "W32A32"]
        score, split = ("val_fp", "validation ") if validation_only else ("fp", "")
        float_line = f"float {split}top1 {model_rows[score].iloc[-1]:.2f}"
        if not floats.empty and not validation_only:
            float_line += f", NLL {floats.nll.iloc[-1]:.4f}"
        if not floats.empty:
            float_line += f" (`{without_resume(floats.command.iloc[-1])}`)"
        shas = ", ".join(sorted(model_rows.git_sha.astype(str).unique()))
        name = model_rows.dataset.iloc[0]
        print(f"### {name}, {model}\n\n{float_line}; {len(model_rows)} rows, code {shas}.\n")
        quantized = model_rows[model_rows.bits != "W32A32"]
        budgets = list(dict.fromkeys(quantized.budget))
        for budget in budgets:
            budget_rows = quantized[quantized.budget == budget]
            if len(budgets) > 1:
                print(f"Fine-tuning budget: {budget}.\n")
            if not validation_only:
                print(model_table(budget_rows, results) + "\n")
                if goals:
                    print(goals_table(budget_rows, results, goals) + "\n")
                if contrasts:
                    print(contrast_table(budget_rows, results, contrasts) + "\n")
            held_out = budget_rows[budget_rows.val_samples.notna()]
            if not held_out.empty:
                print(validation_table(held_out) + "\n")


def scores_table(results: Path, dataset: str | None = None) -> None:
    """A detection or segmentation table: per network, float model and fine-tuning budget,
    per bit-width and method the deployed model's metric, drop and drop_ft as mean ± sample
    std (n seeds), and the same on the held-out validation scenes. No interval: these tasks
    keep no per-image results, and their metrics (AP, mIoU) are not means over images."""
    rows = latest_rows(results, dataset)
    for (task, dataset_name, model, _), model_rows in rows.groupby(
        ["task", "dataset", "model", "float_model"], sort=False
    ):
        metric = model_rows.metric.iloc[-1]
        floats = model_rows[model_rows.bits == "W32A32"]
        shas = ", ".join(sorted(model_rows.git_sha.astype(str).unique()))
        float_line = (
            f"float {metric} {floats.fp.iloc[-1]:.2f}, on the held-out scenes "
            f"{floats.val_fp.iloc[-1]:.2f} (`{without_resume(floats.command.iloc[-1])}`)"
            if not floats.empty
            else f"float {metric} {model_rows.fp.iloc[-1]:.2f}"
        )
        print(f"### {task}, {dataset_name}, {model}\n\n{float_line}; code {shas}.\n")
        quantized = model_rows[model_rows.bits != "W32A32"]
        for budget, budget_rows in quantized.groupby("budget", sort=False):
            print(f"Fine-tuning budget: {budget}.\n")
            print(
                f"| bits | method | {metric} (n) | drop | drop_ft | validation {metric} | "
                "validation drop_ft |\n|---|---|---:|---:|---:|---:|---:|"
            )
            for bits in bits_order(budget_rows.bits):
                at_bits = budget_rows[budget_rows.bits == bits]
                for method in methods_in(at_bits):
                    group = at_bits[at_bits.method == method]
                    cells = [
                        _spread(group.deployed),
                        _spread(group.fp - group.deployed),
                        _spread(group.fp_ft - group.deployed),
                        _spread(group.val_folded),
                        _spread(group.val_fp_ft - group.val_folded),
                    ]
                    print(f"| {bits} | {method} | " + " | ".join(cells) + " |")
            print()


def validation_table(rows: pd.DataFrame) -> str:
    """Per bit-width and method, the deployed model's top1 and drop_ft on the held-out
    validation images (dataset.holdout): the figures recipes and knobs are chosen on."""
    images = ", ".join(str(int(n)) for n in sorted(rows.val_samples.unique()))
    rows = rows.assign(val_deployed=rows.val_folded)  # Brevitas: its quantized model's
    lines = [
        f"Validation split ({images} training images held out, `dataset.holdout`):",
        "",
        "| bits | method | val top1 (n) | val drop_ft |",
        "|---|---|---:|---:|",
    ]
    for bits in bits_order(rows.bits):
        at_bits = rows[rows.bits == bits]
        for method in methods_in(at_bits):
            group = at_bits[at_bits.method == method]
            if not group.empty:
                cells = [_spread(group.val_deployed), _spread(group.val_fp_ft - group.val_deployed)]
                lines.append(f"| {bits} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--preset", default="bench_fashion")
    parser.add_argument("--dataset", help="table: only this data set's rows (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--results", type=Path, help="table: the folder of tables read (the preset's results_dir)"
    )
    parser.add_argument(
        "--redo", action="store_true", help="run again what already has a row (run: skipped)"
    )
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.preset, args.jobs, args.redo)
    else:
        preset = load_preset(args.preset)
        validation_only = bool(preset.get("validation_only", False))
        goals = {method: [str(b) for b in at] for method, at in preset.get("goals", {}).items()}
        contrasts = [(str(line), str(against)) for line, against in preset.get("contrasts", [])]
        results_dir = args.results or results_dir_of(args.preset)
        tables(results_dir, args.dataset, validation_only, goals, contrasts)
        rule = KnobRule.of_preset(preset)
        if rule and (results_dir / CLASSIFICATION).is_file():
            print(choice_text(latest_rows(results_dir / CLASSIFICATION, args.dataset), rule))


if __name__ == "__main__":
    main()
