"""Seeds and epochs of the training stages: what each stage trains, and how long."""

from __future__ import annotations

import zlib

import torch
from omegaconf import DictConfig

from gdrq_bench.quant import FLOAT_BITS, QuantSpec, get_method

QAT, PTQ = "qat", "ptq"  # trainer.schedule: what follows the float model
SCHEDULES = (QAT, PTQ)


def is_ptq(cfg: DictConfig) -> bool:
    """Post-training quantization: calibration in place of the fine-tuning stages."""
    return cfg.trainer.schedule == PTQ


def seed_stage(seed: int, stage: str) -> None:
    """Seed torch for one stage from the run seed and the stage name. Every stage that trains
    reseeds, so a cached float model gives the same later stages as one trained in this run."""
    torch.manual_seed(seed * 1000 + zlib.crc32(stage.encode()) % 1000)


def reshapes(spec: QuantSpec) -> bool:
    """Whether the run has a reshape stage: its method has Scale-Clip and Scale-Clip reshapes
    its layers at the spec's bits (not so at 8 bits without method.scale_clip_8bit: every
    layer then has the edge quantizers, and the reshape epochs go to QAT)."""
    return get_method(spec.method).scale_clip and spec.scale_clips(spec.w_bits, spec.a_bits)


def stage_epochs(cfg: DictConfig, spec: QuantSpec, stage: str) -> int:
    """Epochs of a training stage. Under trainer.equal_budget every method fine-tunes for
    reshape + qat epochs after the float stage: a method without a reshape stage spends the
    reshape epochs in QAT. Post-training quantization fine-tunes nothing."""
    if stage != "fp" and is_ptq(cfg):
        return 0
    epochs = cfg.trainer[stage].epochs
    no_reshape = not reshapes(spec)
    if stage == "qat" and cfg.trainer.equal_budget and no_reshape:
        epochs += max(cfg.trainer.reshape.epochs, 0)
    return max(epochs, 0)


def stage_batches(trainer: DictConfig, stage: str) -> int | None:
    """Batches per epoch of a stage: trainer.finetune_batches for the fine-tuning stages
    (a budget, drawn from the shuffled training set), capped by trainer.max_train_batches
    (smoke tests); None for whole epochs."""
    caps = [trainer.max_train_batches, None if stage == "fp" else trainer.finetune_batches]
    given = [cap for cap in caps if cap is not None]
    return min(given) if given else None


def finetune_stages(spec: QuantSpec) -> list[str]:
    """The stages a method trains after the float stage, in order: reshape (methods with
    Scale-Clip, where it reshapes: `reshapes`), then qat."""
    return ["reshape", "qat"] if reshapes(spec) else ["qat"]


def finetune_epochs(cfg: DictConfig, spec: QuantSpec) -> int:
    """Epochs trained after the float stage (the results row's `finetune_epochs`)."""
    if spec.w_bits == spec.a_bits == FLOAT_BITS:
        return 0
    return sum(stage_epochs(cfg, spec, stage) for stage in finetune_stages(spec))
