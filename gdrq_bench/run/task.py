"""Building the run's task: its class by task.name, its data-set schema checked, and the
policy for unreadable samples."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdrq_bench.config.errors import ConfigError, check_choice
from gdrq_bench.config.presets import presets_extending
from gdrq_bench.data.bad_samples import POLICIES as BAD_SAMPLE_POLICIES
from gdrq_bench.data.bad_samples import SKIP_LOG, BadSamplePolicy
from gdrq_bench.tasks import TASKS, Task
from gdrq_bench.training import distributed


def build_task(cfg: DictConfig, run_dir: Path) -> Task:
    """The task named by task.name, built from the config."""
    bad_samples = bad_sample_policy(cfg, run_dir)
    if cfg.task.name not in TASKS:
        raise ConfigError(f"task.name={cfg.task.name!r} is unknown: use one of {list(TASKS)}")
    task_class = TASKS[cfg.task.name]
    _check_dataset_schema(cfg, task_class)
    dataset, model, trainer = cfg.dataset, cfg.model, cfg.trainer
    return task_class(cfg.task, dataset, model, trainer, cfg.cache_dir, bad_samples)


def bad_sample_policy(cfg: DictConfig, run_dir: Path) -> BadSamplePolicy:
    """dataset.on_bad_sample; skipped files are recorded by rank 0 in the run directory."""
    check_choice("dataset.on_bad_sample", cfg.dataset.on_bad_sample, BAD_SAMPLE_POLICIES)
    log = run_dir / SKIP_LOG if distributed.env_rank() == 0 else None
    return BadSamplePolicy(cfg.dataset.on_bad_sample, log)


def _check_dataset_schema(cfg: DictConfig, task_class: type[Task]) -> None:
    """A data set preset of another task (dataset=digits with task=detection) is refused here,
    naming the presets the task takes, rather than failing later on a missing key."""
    if OmegaConf.get_type(cfg.dataset) is not task_class.dataset_schema:
        valid = presets_extending("dataset", f"{cfg.task.name}_schema")
        raise ConfigError(
            f"dataset.name={cfg.dataset.name} is not a {cfg.task.name} data set; "
            f"task={cfg.task.name} takes dataset= one of {', '.join(valid)}"
        )
