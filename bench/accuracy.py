"""Accuracy retention on the embedded digits task: every method and Brevitas, one float model.

    python bench/accuracy.py run [--jobs 2]    # the runs (appends rows to bench/results/)
    python bench/accuracy.py table             # the tables of RESULTS.md, from those rows

`run` runs the sweep preset conf/sweep/bench_accuracy.yaml (`gdrq-sweep bench_accuracy`), then
the same grids, bits and seeds once more with Brevitas instead of the project's methods
(bench/brevitas_qat.py, --jobs processes of one thread each, as the sweep runs its jobs).
`table` reads bench/results/classification.csv and keeps the latest row of each method,
bit-width and seed, so a rerun replaces earlier numbers rather than averaging with them.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from gdrq_bench.quant import METHODS
from gdrq_bench.sweep import GDRQ_RUN, load_preset, threads_per_job

PRESET = "bench_accuracy"
RESULTS = Path("bench/results/classification.csv")
BREVITAS_QAT = str(Path(__file__).resolve().parent / "brevitas_qat.py")
METHOD_ORDER = [*METHODS, "brevitas"]  # the registry's order, then the outside baseline


def brevitas_commands(jobs: int) -> list[list[str]]:
    """The preset's grids with Brevitas in place of the methods, one command per run, with
    the thread count the sweep's jobs get (the float model's cache key holds it)."""
    preset = load_preset(PRESET)
    common = [*map(str, preset.overrides), f"trainer.threads={threads_per_job(jobs)}"]
    commands = []
    for grid in preset.grids:
        axes = [[f"{key}={v}" for v in str(values).split(",")] for key, values in grid.items()]
        axes = [axis for axis in axes if not axis[0].startswith("method=")]
        for combination in itertools.product(*axes):
            commands.append([sys.executable, BREVITAS_QAT, *common, *combination])
    return commands


def run(jobs: int) -> None:
    sweep = [str(Path(GDRQ_RUN).with_name("gdrq-sweep")), PRESET, "--jobs", str(jobs)]
    if subprocess.run(sweep).returncode != 0:
        sys.exit("bench/accuracy.py: the sweep failed (its log is above)")
    commands = brevitas_commands(jobs)
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(lambda command: subprocess.run(command).returncode, commands))
    failed = [" ".join(c[1:]) for c, code in zip(commands, codes) if code != 0]
    if failed:
        sys.exit("bench/accuracy.py: Brevitas runs failed: " + "; ".join(failed))


def latest_rows(results: Path) -> pd.DataFrame:
    rows = pd.read_csv(results)
    rows["bits"] = "W" + rows.w_bits.astype(str) + "A" + rows.a_bits.astype(str)
    return rows.drop_duplicates(["method", "bits", "seed"], keep="last")


def _spread(values: pd.Series) -> str:
    """'mean' for one value, 'mean ± sample std (n)' for several; '—' where not measured."""
    values = values.dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std():.2f} ({len(values)})"


def bits_order(bits: pd.Series) -> list[str]:
    """Widest first: W8A8, W4A4, W3A3, W2A4."""
    return sorted(bits.unique(), key=lambda b: (-int(b[1]), -int(b.split("A")[1])))


def accuracy_table(rows: pd.DataFrame) -> str:
    """Per bit-width and method: float, quantized and folded top1 and the drop (fp - folded;
    fp - quantized for Brevitas, which has no folded model); mean ± std over seeds."""
    lines = [
        "| bits | method | seeds | float | quantized | folded | drop |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for bits in bits_order(rows.bits):
        for method in METHOD_ORDER:
            group = rows[(rows.bits == bits) & (rows.method == method)]
            if group.empty:
                continue
            cells = [_spread(group[c]) for c in ("fp", "quant", "folded", "drop")]
            seeds = ",".join(str(s) for s in sorted(group.seed))
            lines.append(f"| {bits} | {method} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def deployed_table(rows: pd.DataFrame) -> str:
    """Method x bit-width: the deployed model's top1 (folded; quantized for Brevitas), mean
    over seeds, with each cell's rank among the methods at that bit-width."""
    rows = rows.assign(deployed=rows.folded.fillna(rows.quant))
    means = rows.groupby(["method", "bits"]).deployed.mean().unstack()
    columns = [b for b in bits_order(rows.bits) if b in means.columns]
    ranks = means.rank(ascending=False, method="min")
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for method in [m for m in METHOD_ORDER if m in means.index]:
        cells = [
            f"{means.at[method, b]:.2f} ({ranks.at[method, b]:.0f})"
            if pd.notna(means.at[method, b])
            else "—"
            for b in columns
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: Path) -> None:
    rows = latest_rows(results)
    float_scores = rows.fp.unique()
    print(
        f"{len(rows)} runs (latest row of each method, bit-width and seed in {results}); "
        f"float top1 of the shared model: {', '.join(f'{s:.2f}' for s in float_scores)}; "
        f"{rows.train_s.sum() / 60:.0f} min of training in all.\n"
    )
    print(accuracy_table(rows))
    print("\nDeployed top1 (folded; Brevitas: quantized), mean over seeds, (rank at that width):\n")
    print(deployed_table(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "table"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.action == "run":
        run(args.jobs)
    else:
        table(args.results)


if __name__ == "__main__":
    main()
