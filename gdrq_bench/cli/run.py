"""gdrq-run: the Hydra entry point, nothing else."""

from __future__ import annotations

import difflib
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
from omegaconf import DictConfig, OmegaConf

from gdrq_bench.config import CONFIG_DIR, presets
from gdrq_bench.config.errors import GdrqError
from gdrq_bench.config.overrides import quote_numeric_choice, unquote_numeric_choice

log = logging.getLogger("gdrq_bench")


def _to_log_file(message: str) -> None:
    """`message` into the run's log file only: the console gets it once, from stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _app(cfg: DictConfig) -> None:
    from gdrq_bench.run import row_table, run_pipeline

    hydra_cfg = HydraConfig.get()
    overrides = [unquote_numeric_choice(override) for override in hydra_cfg.overrides.task]
    command = shlex.join(["gdrq-run", *overrides])
    try:
        row = run_pipeline(cfg, command, Path(hydra_cfg.runtime.output_dir))
    except GdrqError as error:
        _to_log_file(str(error))
        print(f"gdrq-run: error: {error}", file=sys.stderr)
        sys.exit(2)
    if row is not None:  # after every logger's output: where the results went
        table = row_table(cfg, cfg.task.name)
        print(f"gdrq-run: row appended to {table}; run directory {row['run_dir']}", flush=True)


# Processes of a distributed run other than rank 0 write no run directory and no log file.
SILENT_RANK_OVERRIDES = [
    "hydra.output_subdir=null",
    "hydra/job_logging=disabled",
    "hydra/hydra_logging=disabled",
    "hydra.run.dir=.",
]


# Hydra's messages that are context rather than the problem (or advice that is wrong here:
# a key added with + would be read by nothing)
HYDRA_DETAIL = (
    "full_key:",
    "reference_type=",
    "object_type=",
    "Set the environment variable",
    "To append to your config use",
)
SEARCH_PATH = "hydra.searchpath="  # more conf/ folders, e.g. a plugin's data set YAML
UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'; Key '[^']+' not in '\w+'")


def one_line(error: HydraException) -> str:
    """Hydra's multi-line composition error as one line naming the bad override."""
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        options = presets.options(group) or error.options
        return f"{group}={choice} is unknown; valid: {', '.join(options)} (conf/{group}/)"
    causes = [str(error), str(error.__cause__ or "")]  # the cause says why: Key 'x' not in ...
    lines = [line.strip(" .") for text in causes for line in text.splitlines()]
    message = "; ".join(line for line in lines if line and not line.startswith(HYDRA_DETAIL))
    unknown = UNKNOWN_KEY.search(message)
    return message + _did_you_mean(unknown[1]) if unknown else message


def _did_you_mean(key: str) -> str:
    """'; did you mean bits?' for a misspelt key: the closest key beside it in the config
    ('' if nothing is close)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        node = compose("config")
    parts, prefix = key.split("."), []
    for part in parts[:-1]:
        if not (isinstance(node, DictConfig) and part in node):
            break
        node, prefix = node[part], [*prefix, part]
    siblings = list(node) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(parts[len(prefix)], siblings, n=1)
    return f"; did you mean {'.'.join([*prefix, close[0]])}?" if close else ""


def added_keys(overrides: list[str]) -> list[tuple[str, str]]:
    """(override, key) of the overrides that add a key (+key=value, ++key=value)."""
    added = []
    for override in overrides:
        key = override.lstrip("+").split("=", 1)[0]
        if override.startswith("+") and not key.startswith(("hydra.", "hydra/")):
            added.append((override, key))
    return added


def unread_key_error(overrides: list[str]) -> str | None:
    """Refuse a key added with `+` that the config does not have: nothing would read it, and the
    run would train the defaults without a word (`+bit=2` instead of `bits=w2a4`)."""
    added = added_keys(overrides)
    if not added:
        return None
    kept = [override for override in overrides if override not in dict(added)]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        base = compose("config", overrides=kept)
    missing = object()
    for override, key in added:
        if OmegaConf.select(base, key, default=missing) is missing:
            return f"{override} adds the key '{key}', which nothing reads{_did_you_mean(key)}"
    return None


def composition_error(arguments: list[str]) -> str | None:
    """The one-line error of a single run's overrides that do not compose, None if they do.
    A multirun, Hydra's own flags and hydra.* overrides but hydra.searchpath are left to
    Hydra, and so is
    everything under HYDRA_FULL_ERROR=1, which asks for Hydra's whole report."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("-") for a in arguments):
        return None
    overrides = [
        argument
        for argument in arguments
        if argument.startswith(SEARCH_PATH)  # a plugin's conf/ folder holds its options
        or not argument.lstrip("+~").startswith(("hydra.", "hydra/"))
    ]
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            compose("config", overrides=overrides)
        return unread_key_error(overrides)
    except HydraException as error:
        return one_line(error)


def help_text() -> str:
    """gdrq-run --help: the groups and options a user can pass (Hydra's own help lists the
    internal schemas and presets too; `--hydra-help` still shows Hydra's options)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        choices = compose("config", return_hydra_config=True).hydra.runtime.choices
    lines = [
        "gdrq-run: one quantization experiment: the float model (trained, cached or loaded),",
        "Scale-Clip reshaping, quantization-aware training, BN fold, evaluation, and one row",
        "appended to results/<task>.csv.",
        "",
        "usage: gdrq-run [group=option ...] [key=value ...]",
        "       gdrq-run -m key=a,b ...      a grid (Hydra multirun)",
        "       gdrq-run --cfg job [...]     print the composed config: every key and its value",
        "",
        "groups (group=option; * the default; model, dataset and trainer follow the task's):",
    ]
    for group in presets.groups():
        default = presets.resolved(group, str(choices.get(group, "")))
        shown = [f"{option}*" if option == default else option for option in presets.options(group)]
        lines.append(f"  {group}: {', '.join(shown)}")
    lines += [
        "",
        "Keys of a group are set as group.key=value (method.k_w=3, trainer.qat.epochs=8);",
        "docs/usage.md lists them, docs/method.md explains the method's. Hydra's own options:",
        "gdrq-run --hydra-help.",
    ]
    return "\n".join(lines)


def main() -> None:
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print(help_text())
        return
    arguments = [quote_numeric_choice(arg) for arg in sys.argv[1:]]
    problem = composition_error(arguments)
    if problem:
        print(f"gdrq-run: error: {problem}", file=sys.stderr)
        sys.exit(2)
    from gdrq_bench.training.distributed import (
        env_rank,  # torch: not needed to refuse a bad override
    )

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
