"""gdrq-run: the Hydra entry point, nothing else."""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig

from gdrq_bench.config import register_configs
from gdrq_bench.errors import GdrqError

log = logging.getLogger("gdrq_bench")

# The repo's conf/ (the package is installed editable from the checkout).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Groups whose option names are numbers (bits=4): Hydra reads `bits=4` as an int and refuses it
# as a group choice, so the command line is rewritten to the quoted form it accepts (bits='4').
NUMERIC_CHOICE_GROUPS = ("bits",)
CHOICE_LIST = re.compile(r"^(\w+)=([\w',]+)$")


def quote_numeric_choice(override: str) -> str:
    """bits=4 -> bits='4' and bits=8,4,w2a4 -> bits='8','4',w2a4; anything else unchanged."""
    match = CHOICE_LIST.match(override)
    if not match or match[1] not in NUMERIC_CHOICE_GROUPS:
        return override
    values = (f"'{value}'" if value.isdigit() else value for value in match[2].split(","))
    return f"{match[1]}=" + ",".join(values)


def unquote_numeric_choice(override: str) -> str:
    """The inverse, so the recorded command reads as a user would type it."""
    match = CHOICE_LIST.match(override)
    if not match or match[1] not in NUMERIC_CHOICE_GROUPS:
        return override
    return f"{match[1]}={match[2].replace(chr(39), '')}"


register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _app(cfg: DictConfig) -> None:
    from gdrq_bench.pipeline import run_pipeline

    hydra_cfg = HydraConfig.get()
    overrides = [unquote_numeric_choice(override) for override in hydra_cfg.overrides.task]
    command = shlex.join(["gdrq-run", *overrides])
    try:
        run_pipeline(cfg, command, Path(hydra_cfg.runtime.output_dir))
    except GdrqError as error:
        log.error("%s", error)
        print(f"gdrq-run: error: {error}", file=sys.stderr)
        sys.exit(2)


# Processes of a distributed run other than rank 0 write no run directory and no log file.
SILENT_RANK_OVERRIDES = [
    "hydra.output_subdir=null",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
    "hydra.run.dir=.",
]


# Hydra's messages that are context rather than the problem.
HYDRA_DETAIL = ("full_key:", "reference_type=", "object_type=", "Set the environment variable")


def one_line(error: HydraException) -> str:
    """Hydra's multi-line composition error as one line naming the bad override."""
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        options = [o for o in error.options if not o.startswith("default_")]
        return f"{group}={choice} is unknown; valid: {', '.join(options)} (conf/{group}/)"
    causes = [str(error), str(error.__cause__ or "")]  # the cause says why: Key 'x' not in ...
    lines = [line.strip(" .") for text in causes for line in text.splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith(HYDRA_DETAIL))


def composition_error(arguments: list[str]) -> str | None:
    """The one-line error of a single run's overrides that do not compose, None if they do.
    A multirun, Hydra's own flags and hydra.* overrides are left to Hydra, and so is
    everything under HYDRA_FULL_ERROR=1, which asks for Hydra's whole report."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("-") for a in arguments):
        return None
    overrides = [a for a in arguments if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("config", overrides=overrides)
    except HydraException as error:
        return one_line(error)
    return None


def main() -> None:
    arguments = [quote_numeric_choice(arg) for arg in sys.argv[1:]]
    problem = composition_error(arguments)
    if problem:
        print(f"gdrq-run: error: {problem}", file=sys.stderr)
        sys.exit(2)
    from gdrq_bench.distributed import env_rank  # torch: not needed to refuse a bad override

    if env_rank() > 0:
        arguments += SILENT_RANK_OVERRIDES
    sys.argv = [sys.argv[0], *arguments]
    try:
        _app()
    except KeyboardInterrupt:
        print(
            "gdrq-run: error: interrupted; no row was written. The checkpoint of the last "
            "finished epoch is kept: the same command with trainer.resume=true continues",
            file=sys.stderr,
        )
        sys.exit(130)
