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

    def log_weight_histogram(self, stats: dict[str, Any], run_dir: Path) -> None:
        """The run's picture of Scale-Clip (layer_stats.json's histograms of one layer)."""

    def finish(self, row: dict[str, Any] | None = None) -> None:
        pass


class WandbLogger(RunLogger):
    """One wandb run per job (named after its run directory) with the resolved config, the
    loss of every epoch, every evaluation's metrics, the weight histogram and the final row
    as the run's summary. WANDB_MODE, when set, wins over `logger.mode`, so tests and CI can
    disable it; offline runs are uploaded later with `wandb sync`."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        import wandb

        self._wandb = wandb
        self._run = wandb.init(
            project=cfg.logger.project,
            mode=os.environ.get("WANDB_MODE", cfg.logger.mode),
            dir=str(run_dir),
            name=f"{cfg.task.name}-{run_dir.name}",
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, Any]) -> None:
        self._run.log(metrics)

    def log_weight_histogram(self, stats: dict[str, Any], run_dir: Path) -> None:
        from gdrq_bench.reporting.figures import save, weight_histogram

        figure, layer = weight_histogram(stats)
        image = save(figure, run_dir / "weight_histogram.png")
        self._run.log({"weight_histogram": self._wandb.Image(str(image), caption=layer)})

    def finish(self, row: dict[str, Any] | None = None) -> None:
        if row is not None:
            self._run.summary.update({k: v for k, v in row.items() if v != ""})
        self._run.finish()


def start_logger(cfg: DictConfig, run_dir: Path) -> RunLogger:
    return WandbLogger(cfg, run_dir) if cfg.logger.name == "wandb" else RunLogger()
