"""The quantized stages, in order: reshape -> qat (or, under post-training quantization,
calibrate) -> fold -> eval -> export, on a quantized copy of the float model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gdrq_bench.config.errors import FoldError
from gdrq_bench.quant import (
    CLIP,
    FLOAT,
    QUANT,
    commit_scale_clip,
    first_differing_layer,
    fold_model,
    get_method,
    layer_weight_stats,
    quantize_model,
    recording_activation_clips,
    set_mode,
    verify_fold,
)
from gdrq_bench.run.budget import is_ptq, reshapes
from gdrq_bench.run.calibrate import calibration_inputs, first_inputs, stage_calibrate
from gdrq_bench.run.context import Run
from gdrq_bench.run.export import stage_export
from gdrq_bench.run.outcome import LayerStats, QuantizedResult
from gdrq_bench.training import distributed

log = logging.getLogger(__name__)

CALIBRATION_BATCHES = 8  # training batches an outside method's model is calibrated on
QUANTIZED_MODEL = "quantized_model.pt"  # the trained model's state_dict, kept when its fold fails


def quantized_stages(run: Run, model: nn.Module) -> QuantizedResult:
    """reshape -> qat (calibrate) -> fold -> eval -> export of a quantized copy of the float
    model. In a distributed run the other processes stop after training, rank 0 goes on
    alone. The export follows the folded model's evaluation, whose predictions its int8
    scores are compared with."""
    qmodel = build_quantized_model(run, model)
    stats = {"before": layer_weight_stats(set_mode(qmodel, FLOAT))}  # the float weights
    if is_ptq(run.cfg):
        stage_calibrate(run, qmodel, model)
    else:
        stats.update(stage_reshape(run, qmodel))
        stage_qat(run, qmodel)
    if not distributed.is_main():
        return QuantizedResult(stats)
    if not get_method(run.spec.method).folds:  # the quantized model is the deployed one
        run.evaluate(qmodel, "quant", final=True)
        return QuantizedResult(stats)
    fold = stage_fold(run, qmodel)
    clips: dict[str, dict[str, float]] = {}
    if run.cfg.trainer.eval_quant or fold.failure is not None:  # a failed fold: its score
        with recording_activation_clips(qmodel) as clips:
            run.evaluate(qmodel, "quant")
    stats["final"] = _merged(layer_weight_stats(qmodel), clips)
    run.evaluate(fold.folded, "folded", final=True)
    if fold.failure is not None:  # a fold that failed its check is not exported
        return QuantizedResult(stats, fold.max_rel, failure=fold.failure)
    exported, failure = stage_export(run, qmodel, fold.folded, fold.batches)
    return QuantizedResult(stats, fold.max_rel, exported, failure)


def build_quantized_model(run: Run, model: nn.Module) -> nn.Module:
    """A quantized copy of `model`: gdrq_bench's layers, or the model the method's hook
    builds from the first CALIBRATION_BATCHES training batches (under post-training
    quantization trainer.calibrate.batches), drawn under their own seed."""
    method = get_method(run.spec.method)
    if method.build is None:
        return quantize_model(model, run.spec, run.task.quant_scope).to(run.device)
    count = run.cfg.trainer.calibrate.batches if is_ptq(run.cfg) else CALIBRATION_BATCHES
    batches = calibration_inputs(run, count)
    return method.build(model, run.spec, run.task.quant_scope, batches)


def stage_reshape(run: Run, qmodel: nn.Module) -> dict[str, LayerStats]:
    """Scale-Clip fine-tune (clip, no rounding), probed after; the weight statistics after it
    ("after"; none without Scale-Clip). Unless Scale-Clip goes on into QAT
    (method.scale_clip_qat), it is then written into the weights: QAT starts from the
    reshaped network and clips it by groups alone."""
    if not reshapes(run.spec):
        return {}
    run.train(set_mode(qmodel, CLIP), "reshape")
    after = _merged(layer_weight_stats(qmodel), run.probe(qmodel, "reshape"))
    if not run.spec.scale_clip_qat:
        commit_scale_clip(qmodel)
    return {"after": after}


def stage_qat(run: Run, qmodel: nn.Module) -> None:
    """Quantization-aware fine-tune, probed before (rounding alone: post-training quantization
    of the float or reshaped model)."""
    run.probe(set_mode(qmodel, QUANT), "round")
    run.train(qmodel, "qat")


@dataclass(frozen=True)
class Fold:
    folded: nn.Module
    max_rel: float  # the check's largest relative difference (float64)
    batches: list[Any]  # the evaluation inputs it was checked on (the export checks the same)
    failure: FoldError | None  # above trainer.fold_tolerance: names the first differing layer


def stage_fold(run: Run, qmodel: nn.Module) -> Fold:
    """Fold BN into the quantized model and check it on evaluation batches (their first
    trainer.fold_check_inputs inputs each). A fold error above trainer.fold_tolerance does
    not lose the training: the trained quantized model is kept in the run directory, the
    failure names the first layer that differs, and the run goes on to its evaluations and
    its row (marked failed=fold), without an export."""
    qmodel.eval()
    loader, trainer = run.task.eval_loader(), run.cfg.trainer
    batches = [
        inputs[: trainer.fold_check_inputs]
        for inputs in first_inputs(run, loader, trainer.fold_check_batches)
    ]
    folded = fold_model(qmodel)
    check = verify_fold(run.task.fold_probe(qmodel), run.task.fold_probe(folded), batches)
    log.info("fold check (float64): max_abs %.3g, max_rel %.3g", check["max_abs"], check["max_rel"])
    tolerance, failure = run.cfg.trainer.fold_tolerance, None
    if not check["max_rel"] <= tolerance:  # NaN fails too
        kept = run.run_dir / QUANTIZED_MODEL
        torch.save(qmodel.state_dict(), kept)  # the module holds unpicklable kernel state
        probe = run.task.fold_probe(qmodel)  # the view verify_fold ran (a detector's: wrapped)
        found = next(
            (hit for batch in batches if (hit := first_differing_layer(probe, batch, tolerance))),
            None,
        )
        where = (
            f"first differing layer {found[0]} (relative difference {found[1]:.3g})"
            if found is not None
            else "no single layer differs beyond it: the difference builds up"
        )
        failure = FoldError(
            f"fold check failed: max relative difference {check['max_rel']:.3g} > "
            f"trainer.fold_tolerance={tolerance:g}; {where} (the trained quantized model's "
            f"state_dict is kept in {kept}; the row is written with failed=fold)"
        )
    return Fold(folded, check["max_rel"], batches, failure)


def _merged(weights: LayerStats, acts: dict[str, dict[str, float]]) -> LayerStats:
    """Per layer: the weight statistics, then the activation clip's."""
    return {name: {**entry, **acts.get(name, {})} for name, entry in weights.items()}
