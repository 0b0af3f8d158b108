"""Experiment tracking: wandb (offline unless told otherwise) or nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


class RunLogger:
    """Does nothing; the base for `logger=none`."""

    def log(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, row: dict[str, Any] | None = None) -> None:
        pass


class WandbLogger(RunLogger):
    """One wandb run per job, with the resolved config. WANDB_MODE, when set, wins over
    `logger.mode`, so tests and CI can disable it."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        import wandb

        self._wandb = wandb
        self._run = wandb.init(
            project=cfg.logger.project,
            mode=os.environ.get("WANDB_MODE", cfg.logger.mode),
            dir=str(run_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any]) -> None:
        self._run.log(metrics)

    def finish(self, row: dict[str, Any] | None = None) -> None:
        if row is not None:
            self._run.summary.update({k: v for k, v in row.items() if v != ""})
        self._run.finish()


def start_logger(cfg: DictConfig, run_dir: Path) -> RunLogger:
    return WandbLogger(cfg, run_dir) if cfg.logger.name == "wandb" else RunLogger()
