"""The directories a run writes to, checked before any training: writable, with room left."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from gdrq_bench.config.errors import ConfigError

# the results table; float models and generated data; per-epoch checkpoints
OUTPUT_KEYS = ("results_dir", "cache_dir", "checkpoint_dir")


def check_output_dir(key: str, path: str | Path, min_free_mb: int) -> None:
    """ConfigError naming `key` if `path` cannot be created, cannot take a file, or has less
    than `min_free_mb` MiB free."""
    directory = Path(path).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"{key}={directory} is not writable: {error.strerror}") from None
    free_mb = shutil.disk_usage(directory).free // 2**20
    if free_mb < min_free_mb:
        raise ConfigError(
            f"{key}={directory} has {free_mb} MiB free, less than min_free_mb={min_free_mb}: "
            f"free some space or point {key} to another disk"
        )


def check_output_dirs(cfg: DictConfig) -> None:
    for key in OUTPUT_KEYS:
        check_output_dir(key, cfg[key], cfg.min_free_mb)
