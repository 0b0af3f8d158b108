"""The float recipe: how many epochs each float model of a preset needs, chosen on validation.

    python bench/float_recipe.py run [--preset bench_fashion] [--holdout 5000]
        [--epochs 8,12,18,27] [--jobs 2] [--results bench/results/float_recipe]
    python bench/float_recipe.py table [--results bench/results/float_recipe]

`run` trains each float model of a sweep preset (bench/accuracy.py's float_commands: the
preset's overrides and the grid's float recipe) once per number of epochs E, with --holdout
training images held out as a validation split (`dataset.holdout`: stratified by class for
classification, a plain draw of detection and segmentation scenes) and its rows in --results
(one table per task):

    gdrq-run <preset overrides> dataset.holdout=N bits=32 <model's overrides>
        trainer.fp.epochs=E results_dir=<--results>

(the preset's trainer.fp.epochs and results_dir replaced). It goes in rounds, the fewest
epochs first, each round every model's run at that E, --jobs processes of cores / jobs
threads each (the thread count is in the float cache key, so in the command). A model whose
rows already show its plateau (below) gets no longer runs: the rule needs none; nor does a
run that would cost more than about 3 hours of one core at the model's rate so far. A command
that already has a row (its `command` column, as gdrq-run records it, `trainer.resume=`
aside) is skipped, and the bench's runs resume from their last epoch's checkpoint
(bench/accuracy.py passes trainer.resume=true): a stopped run continues where it stopped.

`table` prints per float model its curve (epochs, the task's metric on the held-out images
and on the evaluation split, training minutes) and the recipe chosen on the validation figure
only (`plateau`): plateau at E, the smallest E whose next longer run E' (the shortest run with
E' >= 1.5 E) gains less than 0.1 points. Without a plateau, once the next longer run would
cost more than about 3 hours of one core, the recipe is the longest run that fits, and the
curve shows how far from its plateau it stops. A run's cost is its epochs times the model's
seconds per epoch of its fastest run (train_s is wall time, inflated when other processes
share the cores). The evaluation split's figure is shown for information: a recipe chosen on
it would be tuned to the images the tables report.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/accuracy.py, when imported
from accuracy import (
    Job,
    float_commands,
    note_other_thread_counts,
    recorded,
    run_jobs,
    task_tables,
    without_resume,
)

RESULTS_DIR = Path("bench/results/float_recipe")
FLOAT_BITS = "bits=32"
EPOCHS = "trainer.fp.epochs="
REPLACED = ("dataset.holdout=", EPOCHS, "results_dir=")  # set here, whatever the preset says
MIN_STEP = 1.5  # E' >= 1.5 E: a longer run that is not much longer cannot show a plateau
MIN_GAIN = 0.1  # points of validation top1
BUDGET_S = 3 * 3600  # about 3 hours of one core


def recipe_command(
    float_command: list[str], holdout: int, epochs: int, results_dir: Path
) -> list[str]:
    """A float model's command with `holdout` images held out, trained `epochs` epochs, its
    row in `results_dir`."""
    kept = [arg for arg in float_command if not arg.startswith(REPLACED)]
    at = kept.index(FLOAT_BITS)
    return [
        *kept[:at],
        f"dataset.holdout={holdout}",
        *kept[at:],
        f"{EPOCHS}{epochs}",
        f"results_dir={results_dir}",
    ]


def recipe_commands(
    preset_name: str, holdout: int, epochs: Sequence[int], jobs: int, results_dir: Path
) -> list[list[str]]:
    """Every float model of the preset at every number of epochs, model by model."""
    return [
        recipe_command(command, holdout, count, results_dir)
        for command in float_commands(preset_name, jobs)
        for count in epochs
    ]


def recorded_commands(results_dir: Path) -> set[str]:
    """The `command` of every row of the tables in `results_dir`, as `recorded` spells it."""
    commands = set()
    for path in task_tables(results_dir):
        with path.open(newline="") as table:
            commands |= {without_resume(row["command"]) for row in csv.DictReader(table)}
    return commands


def epochs_of(command: Sequence[str]) -> int | None:
    """The float stage's epochs a command sets (the last trainer.fp.epochs=), None if unset."""
    values = [arg.removeprefix(EPOCHS) for arg in command if arg.startswith(EPOCHS)]
    return int(values[-1]) if values else None


def run(
    preset_name: str,
    holdout: int,
    epochs: Sequence[int],
    jobs: int,
    results_dir: Path = RESULTS_DIR,
) -> None:
    """Run every float recipe without a row in results_dir's tables, in rounds of one number
    of epochs, the fewest first; a model whose plateau its rows already show gets no longer
    runs."""
    commands = recipe_commands(preset_name, holdout, epochs, jobs, results_dir)
    done = recorded_commands(results_dir)
    note_other_thread_counts(results_dir, jobs, "bench/float_recipe.py")
    todo = [command for command in commands if recorded(command) not in done]
    for command in commands:
        state = "to go" if command in todo else "skipped, has a row"
        print(f"bench/float_recipe.py: {state}: {recorded(command)}", file=sys.stderr)
    print(
        f"bench/float_recipe.py: at most {len(todo)} float runs to go "
        f"({len(commands) - len(todo)} already in {results_dir})",
        file=sys.stderr,
        flush=True,
    )
    ended = itertools.count(1)

    def progress() -> None:
        print(f"bench/float_recipe.py: {next(ended)} runs ended", file=sys.stderr)

    failed = []
    for count in sorted(set(map(epochs_of, todo))):
        reasons = not_needed(results_dir, count)
        round_ = [
            command
            for command in todo
            if epochs_of(command) == count and _template(recorded(command)) not in reasons
        ]
        for command in todo:
            if epochs_of(command) == count and command not in round_:
                reason = reasons[_template(recorded(command))]
                print(
                    f"bench/float_recipe.py: {reason}: {recorded(command)} is not needed",
                    file=sys.stderr,
                )
        failed += run_jobs([Job(command) for command in round_], jobs, after_each=progress)
    if failed:
        sys.exit("bench/float_recipe.py: runs failed: " + "; ".join(failed))


def not_needed(results_dir: Path, epochs: int) -> dict[str, str]:
    """Why a curve of results_dir's tables needs no run of `epochs` epochs: template -> its
    plateau, or the run's cost over about 3 hours of one core."""
    reasons = {}
    for curve in curves(results_dir):
        at = plateau({point.epochs: point.val for point in curve.points})
        rate = seconds_per_epoch(curve.points)
        if at is not None:
            reasons[curve.template] = f"plateau at {at.at} epochs ({at.longer} gain {at.gain:+.2f})"
        elif over_budget(epochs, rate):
            reasons[curve.template] = (
                f"{epochs} epochs would take about {epochs * rate / 3600:.1f} h of one core"
            )
    return reasons


class Plateau(NamedTuple):
    at: int  # E
    longer: int  # E', the shortest run with E' >= MIN_STEP * E
    gain: float  # its validation score minus E's


def next_longer(epochs: Sequence[int], count: int) -> int | None:
    """The shortest run at least MIN_STEP times `count` epochs; None if there is none."""
    return min((e for e in epochs if e >= MIN_STEP * count), default=None)


def plateau(validation: Mapping[int, float]) -> Plateau | None:
    """The smallest E (epochs, of `validation`: epochs -> validation score) whose next longer
    run E' (the shortest with E' >= 1.5 E) gains less than 0.1 points; None if no E does.
    Gains are rounded to the row's 4 decimals, so 91.3 over 91.2 is a gain of 0.1, not
    0.0999...: a tie with the threshold is no plateau."""
    for count in sorted(validation):
        longer = next_longer(list(validation), count)
        if longer is None:
            continue
        gain = round(validation[longer] - validation[count], 4)
        if gain < MIN_GAIN:
            return Plateau(count, longer, gain)
    return None


@dataclass(frozen=True)
class Point:
    """One run of a curve: its epochs, validation and test score, training seconds (None
    where its float model came from the cache and was not timed)."""

    epochs: int
    val: float
    test: float
    train_s: float | None


def seconds_per_epoch(points: Sequence[Point]) -> float | None:
    """One core's training seconds per epoch, from the least disturbed timed run: train_s is
    wall time, which only grows when other processes share the cores or a run is paused, so
    the smallest train_s / epochs is the closest to the run's own cost. None if none is
    timed."""
    return min((p.train_s / p.epochs for p in points if p.train_s), default=None)


def over_budget(epochs: int, rate: float | None) -> bool:
    """Whether `epochs` at `rate` seconds per epoch cost more than about 3 hours of one core
    (never, while no run of the curve is timed)."""
    return rate is not None and epochs * rate > BUDGET_S


def choice(points: Sequence[Point], metric: str = "top1") -> str:
    """The recipe chosen on the validation figures (of `metric`): the plateau by `plateau`;
    without one, the longest run that fits about 3 hours of one core once the next longer run
    would not fit (at the curve's `seconds_per_epoch`)."""
    by_epochs = {point.epochs: point for point in points}
    found = plateau({e: point.val for e, point in by_epochs.items()})
    rate = seconds_per_epoch(points)
    cost = (
        "" if rate is None else f" One core trains {rate / 60:.1f} min per epoch (the fastest run)."
    )
    if found is not None:
        return (
            f"plateau at {found.at} epochs: {found.longer} epochs gain {found.gain:+.2f} points "
            f"of validation {metric} (< {MIN_GAIN}).{cost}"
        )
    fits = sorted(e for e in by_epochs if not over_budget(e, rate))
    if not fits:
        return f"no plateau, and no run fits about 3 hours of one core.{cost}"
    longest = by_epochs[fits[-1]]
    if len(fits) == 1:
        text = f"no plateau yet: one run only ({longest.epochs} epochs)."
    else:
        previous = by_epochs[fits[-2]]
        text = (
            f"no plateau yet: the longest run, {longest.epochs} epochs, is "
            f"{longest.val - previous.val:+.2f} points over the previous "
            f"({previous.epochs} epochs)."
        )
    needed = math.ceil(MIN_STEP * longest.epochs)
    if over_budget(needed, rate):
        text += (
            f"{cost} The next longer run ({needed} epochs, about {needed * rate / 3600:.1f} h) "
            f"would not fit about 3 hours of one core ({BUDGET_S:,} s): the recipe is "
            f"{longest.epochs} epochs (validation {metric} {longest.val:.2f}), "
            f"the longest that fits, short of its plateau."
        )
    else:
        text += cost
    return text


@dataclass(frozen=True)
class Curve:
    dataset: str
    model: str
    metric: str  # the task's: top1, bbox_ap, map50, miou
    template: str  # the command with its epochs as E
    val_samples: int
    points: list[Point]
    shas: list[str]


def _template(command: str) -> str:
    """A recorded command with its epochs as E and without `trainer.resume=`."""
    return shlex.join(
        f"{EPOCHS}E" if arg.startswith(EPOCHS) else arg
        for arg in shlex.split(without_resume(command))
    )


def _point(runs: pd.DataFrame) -> Point:
    """One epochs' runs (a rerun appends another row): the latest row's figures, and the
    training time of the latest that trained its float model."""
    latest, trained = runs.iloc[-1], runs[runs.fp_source == "trained"]
    train_s = float(trained.train_s.iloc[-1]) if not trained.empty else None
    return Point(int(latest.epochs), float(latest.val_fp), float(latest.fp), train_s)


def curves(results_dir: Path) -> list[Curve]:
    """The float runs of results_dir's tables with a validation score and their epochs on the
    command line, one curve per command that differs only in its epochs, in the tables'
    order."""
    read = [pd.read_csv(path) for path in task_tables(results_dir)]
    if not read:
        return []
    rows = pd.concat(read, ignore_index=True)
    rows = rows[(rows.w_bits == 32) & (rows.a_bits == 32) & rows.val_fp.notna()]
    rows = rows[rows.failed.isna()].copy()
    rows["epochs"] = [epochs_of(shlex.split(command)) for command in rows.command]
    rows = rows[rows.epochs.notna()]
    rows["template"] = rows.command.map(_template)
    found = []
    for template, runs in rows.groupby("template", sort=False):
        points = [_point(group) for _, group in runs.groupby("epochs")]
        first = runs.iloc[0]
        shas = sorted(runs.git_sha.astype(str).unique())
        found.append(
            Curve(
                first.dataset,
                first.model,
                first.metric,
                template,
                int(first.val_samples),
                points,
                shas,
            )
        )
    return found


def _minutes(seconds: float | None) -> str:
    return "cached" if seconds is None else f"{seconds / 60:.1f}"


def curve_table(curve: Curve) -> str:
    """A curve's heading, its command, its runs as a Markdown table and the chosen recipe."""
    metric = curve.metric
    top1 = metric == "top1"
    lines = [
        f"### {curve.dataset}, {curve.model}: float epochs, chosen on "
        f"{curve.val_samples:,} held-out training images",
        "",
        f"`{curve.template}`; code {', '.join(curve.shas)}."
        + (f" One held-out image is {100 / curve.val_samples:.3g} points." if top1 else ""),
        "",
        f"| epochs | validation {metric} ({curve.val_samples:,} images) | test {metric} "
        "(information only) | train min (wall) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.epochs} | {p.val:.2f} | {p.test:.2f} | {_minutes(p.train_s)} |"
        for p in sorted(curve.points, key=lambda p: p.epochs)
    ]
    rule = (
        f"the smallest E whose next longer run E' (the shortest with E' >= {MIN_STEP} E) gains "
        f"less than {MIN_GAIN} points of validation {metric}"
    )
    chosen = choice(curve.points, metric)
    return "\n".join([*lines, "", f"Chosen on validation ({rule}): {chosen}"])


def table(results_dir: Path) -> None:
    """The curves of the rows present: none yet says so (make_results --tables-only on a
    clone where the runs have not been made)."""
    found = curves(results_dir)
    if not found:
        print(f"No float run with a validation score and its epochs in {results_dir} yet.")
    for curve in found:
        print(curve_table(curve) + "\n")


def _epochs(text: str) -> list[int]:
    counts = sorted({int(value) for value in text.split(",")})
    if counts[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: epochs must be positive integers")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--preset", default="bench_fashion")
    parser.add_argument("--holdout", type=int, default=5000, help="training images held out")
    parser.add_argument("--epochs", type=_epochs, default=[8, 12, 18, 27], help="e.g. 8,12,18")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="where the rows are (a task's table each)"
    )
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.preset, args.holdout, args.epochs, args.jobs, args.results)
    else:
        table(args.results)


if __name__ == "__main__":
    main()
