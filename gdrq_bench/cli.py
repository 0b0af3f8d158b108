"""gdrq-run: the Hydra entry point, nothing else."""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gdrq_bench.config import register_configs
from gdrq_bench.errors import GdrqError

log = logging.getLogger("gdrq_bench")

# The repo's conf/ (the package is installed editable from the checkout).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Groups whose option names are numbers (bits=4): Hydra reads `bits=4` as an int and refuses it
# as a group choice, so the command line is rewritten to the quoted form it accepts (bits='4').
NUMERIC_CHOICE = re.compile(r"^(bits)=([0-9]+(?:,[0-9]+)*)$")
QUOTED_CHOICE = re.compile(r"^(bits)=('[0-9]+'(?:,'[0-9]+')*)$")

register_configs()


def quote_numeric_choice(override: str) -> str:
    """bits=4 -> bits='4' and bits=2,4 -> bits='2','4'; anything else unchanged."""
    match = NUMERIC_CHOICE.match(override)
    if not match:
        return override
    return f"{match[1]}=" + ",".join(f"'{value}'" for value in match[2].split(","))


def unquote_numeric_choice(override: str) -> str:
    """The inverse, so the recorded command reads as a user would type it."""
    match = QUOTED_CHOICE.match(override)
    return f"{match[1]}={match[2].replace(chr(39), '')}" if match else override


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


def main() -> None:
    sys.argv = [sys.argv[0], *(quote_numeric_choice(arg) for arg in sys.argv[1:])]
    _app()
