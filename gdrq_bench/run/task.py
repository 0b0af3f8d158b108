"""Building the run's task: its bad-sample policy, data-set schema and class."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gdrq_bench import distributed
from gdrq_bench.data.bad_samples import POLICIES as BAD_SAMPLE_POLICIES
from gdrq_bench.data.bad_samples import SKIP_LOG, BadSamplePolicy
from gdrq_bench.errors import ConfigError, check_choice
from gdrq_bench.presets import presets_extending
from gdrq_bench.tasks.base import Task

TASK_NAMES = ("classification", "detection", "segmentation")


def _check_dataset_schema(cfg: DictConfig) -> None:
    """A data set preset of another task (dataset=digits with task=detection) is refused here,
    naming the presets the task takes, rather than failing later on a missing key."""
    expected = f"{cfg.task.name.capitalize()}DatasetConfig"
    if OmegaConf.get_type(cfg.dataset).__name__ != expected:
        valid = presets_extending("dataset", f"{cfg.task.name}_schema")
        raise ConfigError(
            f"dataset.name={cfg.dataset.name} is not a {cfg.task.name} data set; "
            f"task={cfg.task.name} takes dataset= one of {', '.join(valid)}"
        )


def bad_sample_policy(cfg: DictConfig, run_dir: Path) -> BadSamplePolicy:
    """dataset.on_bad_sample; skipped files are recorded by rank 0 in the run directory."""
    check_choice("dataset.on_bad_sample", cfg.dataset.on_bad_sample, BAD_SAMPLE_POLICIES)
    log = run_dir / SKIP_LOG if distributed.env_rank() == 0 else None
    return BadSamplePolicy(cfg.dataset.on_bad_sample, log)


def build_task(cfg: DictConfig, bad_samples: BadSamplePolicy) -> Task:
    """The task named by task.name (imported here: each task pulls in its own libraries)."""
    if cfg.task.name not in TASK_NAMES:
        raise ConfigError(f"task.name={cfg.task.name!r} is unknown: use one of {list(TASK_NAMES)}")
    _check_dataset_schema(cfg)
    common = (cfg.dataset, cfg.model, cfg.trainer, cfg.cache_dir, bad_samples)
    if cfg.task.name == "classification":
        from gdrq_bench.tasks.classification import ClassificationTask

        return ClassificationTask(*common)
    if cfg.task.name == "detection":
        from gdrq_bench.tasks.detection import DetectionTask

        return DetectionTask(cfg.task, *common)
    from gdrq_bench.tasks.segmentation import SegmentationTask

    return SegmentationTask(cfg.task, *common)
