"""The calibrate stage of post-training quantization (trainer.schedule=ptq), in place of
reshape and QAT: trainer.calibrate.batches training batches (never evaluation images) set
each activation clip (calibrate.act_range), then the weights round to the nearest level or
are learned (calibrate.rounding=adaround), then, with calibrate.bn_reestimate, each BN
layer's statistics are measured again through the quantized model, then, with
calibrate.bias_correction, each layer's mean output error leaves its bias. The weights' own
clips are the method's, read off the float weights: per tensor, per channel or per group
(grouping), by max |W| (minmax) or the QL_2 search (grouping.alpha=search).

Under PTQ, GDRQ's Scale-Clip, which reshapes the network by training, is written into the
float weights as one clip at k_w * s(W) (commit_scale_clip) before its groups are searched;
k_a and act_stat, rules of training-time activation clips, give way to act_range.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import CalibrateConfig
from gdrq_bench.quant import (
    QUANT,
    QuantSpec,
    commit_scale_clip,
    get_method,
    set_mode,
)
from gdrq_bench.quant.act_ranges import RANGE_RULES
from gdrq_bench.quant.adaround import AdaRoundSettings
from gdrq_bench.quant.fold import move_batch
from gdrq_bench.quant.ptq import (
    adaround_model,
    calibrate_activations,
    correct_biases,
    reestimate_batch_norms,
)
from gdrq_bench.quant.weight_quant import GroupWeightQuantizer
from gdrq_bench.run.budget import SCHEDULES, is_ptq, seed_stage
from gdrq_bench.run.context import Run

log = logging.getLogger(__name__)

CALIBRATE = "calibrate"  # the stage's name: its seed, its time in the row's train_s
ROUNDINGS = ("nearest", "adaround")
# trainer.calibrate's choices (besides how many batches): each a column of a PTQ row
CALIBRATION_CHOICES = ("act_range", "rounding", "bn_reestimate", "bias_correction")


def first_inputs(run: Run, loader: Any, count: int) -> list[Any]:
    """The model inputs of the loader's first `count` batches (a batch the bad-sample guard
    emptied is passed over)."""
    return [run.task.model_inputs(batch) for batch in islice(loader, count) if batch is not None]


def calibration_inputs(run: Run, count: int) -> list[Any]:
    """The first `count` training batches under the stage's own seed, on the run's device;
    their images are counted in run.calibration_samples (the row's calib_samples under PTQ)."""
    seed_stage(run.cfg.seed, CALIBRATE)
    batches = first_inputs(run, run.task.train_loader(), count)
    run.calibration_samples = sum(len(inputs) for inputs in batches)
    return [move_batch(inputs, run.device) for inputs in batches]


def calibration_defaults() -> dict[str, Any]:
    """trainer.calibrate's choices at their defaults: all a method whose model another
    library builds and calibrates (Method.build) can take."""
    defaults = CalibrateConfig()
    return {key: getattr(defaults, key) for key in CALIBRATION_CHOICES}


def check_schedule(cfg: DictConfig, spec: QuantSpec) -> None:
    """trainer.schedule and, under PTQ, trainer.calibrate: values a run can take, for the
    run's method (one error naming the key, before anything trains)."""
    schedule, settings = cfg.trainer.schedule, cfg.trainer.calibrate
    if schedule not in SCHEDULES:
        raise ConfigError(f"trainer.schedule={schedule!r} is unknown: use one of {SCHEDULES}")
    if not is_ptq(cfg):
        return
    for key, value, allowed in (
        ("act_range", settings.act_range, RANGE_RULES),
        ("rounding", settings.rounding, ROUNDINGS),
    ):
        if value not in allowed:
            raise ConfigError(f"trainer.calibrate.{key}={value!r} is unknown: use one of {allowed}")
    for key in ("batches", "adaround_iterations"):
        if not settings[key] >= 1:
            raise ConfigError(f"trainer.calibrate.{key}={settings[key]!r} must be >= 1")
    if not 0 < settings.percentile <= 100:
        raise ConfigError(
            f"trainer.calibrate.percentile={settings.percentile!r} must be in (0, 100]"
        )
    method = get_method(spec.method)
    defaults = calibration_defaults()
    if method.build is not None and any(settings[key] != value for key, value in defaults.items()):
        choices = ", ".join(f"{key}={str(value).lower()}" for key, value in defaults.items())
        raise ConfigError(
            f"method={spec.method} calibrates its own model: trainer.calibrate takes only "
            f"batches there ({choices}, their defaults)"
        )
    if settings.rounding == "adaround" and method.build is None:
        probe = method.weight(spec, spec.w_bits, 1, 1) if method.weight else None
        if not isinstance(probe, GroupWeightQuantizer):
            raise ConfigError(
                f"trainer.calibrate.rounding=adaround: method={spec.method} rounds a transformed "
                "weight; learned rounding needs group weight quantizers (gdrq, groups_only, "
                "minmax, lsq)"
            )


def stage_calibrate(run: Run, qmodel: nn.Module, float_model: nn.Module) -> None:
    """Calibrate `qmodel` (left in quant mode) as the module docstring says. A method whose
    model another library builds was calibrated as it was built: nothing more is done to
    it."""
    set_mode(qmodel, QUANT)
    method = get_method(run.spec.method)
    if method.build is not None:
        return
    start = time.perf_counter()
    settings = run.cfg.trainer.calibrate
    batches = calibration_inputs(run, settings.batches)
    if method.scale_clip:
        commit_scale_clip(qmodel)
    generator = torch.Generator().manual_seed(run.cfg.seed)
    calibrate_activations(
        qmodel, batches, settings.act_range, settings.percentile, run.spec.search_points, generator
    )
    if settings.rounding == "adaround":
        iterations = AdaRoundSettings(iterations=settings.adaround_iterations)
        adaround_model(qmodel, float_model, batches, iterations, generator)
    if settings.bn_reestimate:
        reestimate_batch_norms(qmodel, batches)
    if settings.bias_correction:
        correct_biases(qmodel, float_model, batches)
    run.stage_seconds[CALIBRATE] = time.perf_counter() - start
    log.info(
        "calibrate: %d images, act_range=%s, rounding=%s, bn_reestimate=%s, "
        "bias_correction=%s (%.1f s)",
        run.calibration_samples,
        settings.act_range,
        settings.rounding,
        settings.bn_reestimate,
        settings.bias_correction,
        run.stage_seconds[CALIBRATE],
    )
