"""What conf/ offers a user: the config directory, its groups and their options, with the
internal ones (typed schemas, the task-dependent `default_*` indirections, gdrq-sweep's presets)
left out, and the presets that extend a schema."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

# The repo's conf/ (the package is installed editable from the checkout).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
NOT_GDRQ_RUN_GROUPS = ("hydra", "sweep")  # Hydra's own; gdrq-sweep's presets


def options(group: str) -> list[str]:
    """The options a user can pass as group=option: conf/<group>/*.yaml but `default_*`."""
    files = sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
    return [file.stem for file in files if not file.stem.startswith("default_")]


def groups() -> list[str]:
    """The config groups gdrq-run takes."""
    folders = sorted(path for path in Path(CONFIG_DIR).iterdir() if path.is_dir())
    return [folder.name for folder in folders if folder.name not in NOT_GDRQ_RUN_GROUPS]


def presets_extending(group: str, schema: str) -> list[str]:
    """The options of `group` whose YAML builds on `schema` (in its defaults list)."""
    extending = []
    for option in options(group):
        defaults = OmegaConf.load(Path(CONFIG_DIR) / group / f"{option}.yaml").get("defaults", [])
        if schema in defaults:
            extending.append(option)
    return extending


def resolved(group: str, option: str) -> str:
    """The option a `default_<task>` indirection stands for (the first entry of its defaults
    list); any other option itself."""
    if not option.startswith("default_"):
        return option
    return str(OmegaConf.load(Path(CONFIG_DIR) / group / f"{option}.yaml").defaults[0])
