"""gdrq-sweep: run a grid preset of conf/sweep/ as Hydra multiruns of gdrq-run.

A preset is a list of grids (a grid is the Cartesian product of its values) plus overrides for
every run; several grids express what one product cannot, such as "grouping varies for gdrq
only". Each grid is one `gdrq-run --multirun`; `--jobs N` runs N jobs at once through Hydra's
joblib launcher, and any further argument (an override, `hydra/launcher=submitit_slurm`) is
passed on to every grid.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdrq_bench.config.errors import SweepError

SWEEP_DIR = Path(__file__).resolve().parents[2] / "conf" / "sweep"
GDRQ_RUN = str(Path(sys.executable).parent / "gdrq-run")


def load_preset(name: str, directory: Path = SWEEP_DIR) -> DictConfig:
    """A preset by name (a file of conf/sweep/) or by the path of a YAML file."""
    path = Path(name) if name.endswith(".yaml") else directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(file.stem for file in directory.glob("*.yaml"))
        raise SweepError(f"sweep preset {name!r} not found: use a path or one of {known}")
    preset = OmegaConf.load(path)
    grids = preset.get("grids")
    if not grids or not all(isinstance(grid, DictConfig) and grid for grid in grids):
        raise SweepError(f"{path}: 'grids' must be a non-empty list of key: values mappings")
    return preset


def threads_per_job(jobs: int) -> int:
    """N local processes share the cores: a torch thread pool of cores / N each."""
    return max(1, (os.cpu_count() or 1) // jobs)


def grid_commands(preset: DictConfig, extra: list[str], jobs: int | None) -> list[list[str]]:
    """One gdrq-run --multirun command line per grid of the preset."""
    launcher = []
    chosen = any(override.startswith("hydra/launcher=") for override in extra)
    if jobs and jobs > 1 and not chosen:  # a launcher named by the user (Slurm) wins
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
        if not any(override.startswith("trainer.threads=") for override in extra):
            launcher.append(f"trainer.threads={threads_per_job(jobs)}")
    common = [str(override) for override in preset.get("overrides", [])]
    return [
        [GDRQ_RUN, "--multirun", *common, *(f"{k}={v}" for k, v in grid.items()), *launcher, *extra]
        for grid in preset.grids
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "preset", nargs="?", default="default", help="a name in conf/sweep/ or a .yaml path"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="local jobs at once (joblib; default: the preset's)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("overrides", nargs="*", help="passed to every gdrq-run")
    args = parser.parse_intermixed_args(argv)
    try:
        preset = load_preset(args.preset)
        commands = grid_commands(preset, args.overrides, args.jobs or preset.get("jobs"))
    except SweepError as error:
        sys.exit(f"gdrq-sweep: error: {error}")
    for number, command in enumerate(commands, 1):
        shown = shlex.join(["gdrq-run", *command[1:]])
        print(f"gdrq-sweep: grid {number}/{len(commands)}: {shown}", flush=True)
        if not args.dry_run and subprocess.run(command).returncode != 0:
            sys.exit(f"gdrq-sweep: error: grid {number} failed (its log is above)")
