"""Preparing a run: every check that is cheap, before anything trains, and the pieces every
runner needs (spec, task, the float model's initial weights)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.quant import QuantSpec, SpecError, get_method, layer_plan
from gdrq_bench.quant.fused import use_fused_kernels
from gdrq_bench.run.budget import seed_stage
from gdrq_bench.run.calibrate import check_schedule
from gdrq_bench.run.export import NONE, check_export
from gdrq_bench.run.output_dirs import check_output_dirs
from gdrq_bench.run.spec import build_spec, spec_error
from gdrq_bench.run.task import build_task
from gdrq_bench.tasks import Task


def check_method(spec: QuantSpec, task: str, export: str) -> None:
    """A method whose model another library builds (Method.build): its modules installed, a
    task it quantizes, and no export where its model does not fold."""
    method = get_method(spec.method)
    missing = [name for name in method.needs if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"method={spec.method} needs {' and '.join(missing)}, which is not installed "
            "(pip install -e '.[bench]')"
        )
    if method.tasks is not None and task not in method.tasks:
        raise ConfigError(
            f"method={spec.method} quantizes {' and '.join(method.tasks)} models only, "
            f"not task={task}"
        )
    if not method.folds and export != NONE:
        raise ConfigError(
            f"export={export}: method={spec.method} keeps BatchNorm apart, so its model is "
            "neither folded nor exported (use export=none)"
        )


@dataclass(frozen=True)
class RunSetup:
    """A checked config and what it builds: the spec, the task and the untrained float model."""

    cfg: DictConfig
    spec: QuantSpec
    task: Task
    model: nn.Module


def prepare_run(cfg: DictConfig, run_dir: Path) -> RunSetup:
    """Check the config (resolved, plugins imported, spec, output directories), set the
    thread count and the fused kernels' switch, build the task and the float model at its
    initial weights, and check the spec against the model's layers; a problem raises a
    GdrqError naming the key."""
    check_resolved(cfg)
    import_plugins(cfg.plugins)
    spec = build_spec(cfg)
    check_method(spec, cfg.task.name, cfg.export)
    check_schedule(cfg, spec)
    check_export(cfg.export, cfg.task.name, spec)
    if cfg.model.pretrained and cfg.model.checkpoint:
        raise ConfigError("model.pretrained=true and model.checkpoint are both set; choose one")
    check_output_dirs(cfg)
    for key in ("fold_check_batches", "fold_check_inputs"):
        if not cfg.trainer[key] >= 1:
            raise ConfigError(f"trainer.{key}={cfg.trainer[key]!r} must be >= 1")
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    use_fused_kernels(cfg.trainer.fused_kernels)
    task = build_task(cfg, run_dir)
    seed_stage(cfg.fp_seed, "init")  # the float model's initial weights
    model = task.build_model()
    try:  # the checks that need the model's layers (groups per layer), before any training
        layer_plan(model, spec, task.quant_scope)
    except SpecError as error:
        raise spec_error(error) from None
    return RunSetup(cfg, spec, task, model)


def import_plugins(modules: list[str]) -> None:
    """Import the `plugins` modules: each registers what it adds (a data set, an export
    format) as it is imported. One that cannot be imported is named with the reason."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:  # any failure of a plugin's import: named, not a traceback
            raise ConfigError(f"plugins: cannot import {name!r}: {error}") from None


def check_resolved(cfg: DictConfig) -> None:
    """Every interpolation resolves and no value is missing (omegaconf names the key)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as error:  # omegaconf's errors name the key in `full_key`
        key = getattr(error, "full_key", "") or "config"
        raise ConfigError(f"{key}: {getattr(error, 'msg', error)}") from None
