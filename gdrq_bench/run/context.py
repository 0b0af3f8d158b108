"""The run context: what every stage reads (config, spec, task, where files go) and what its
own methods measure for the report (the scores of evaluate, the times of train); the stages'
results are typed (outcome.py)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from gdrq_bench.quant import QuantSpec, recording_activation_clips
from gdrq_bench.quant.fold import call_model, move_batch
from gdrq_bench.reporting.run_logger import RunLogger
from gdrq_bench.run.budget import seed_stage, stage_batches, stage_epochs
from gdrq_bench.tasks import Task
from gdrq_bench.training import distributed
from gdrq_bench.training.checkpoint import RunCheckpoints
from gdrq_bench.training.engine import train_stage

log = logging.getLogger(__name__)

# the stages of a run whose time is its train_s, in order (calibrate: post-training
# quantization's, in place of reshape and qat)
STAGES = ("fp", "reshape", "qat", "calibrate")
VALIDATION = "val_"  # metrics.json's prefix of a model's scores on the held-out images
LOGGED_METRICS = 4  # metrics per evaluation in the log; COCO has 12, VOC one per class


@dataclass
class Run:
    cfg: DictConfig
    spec: QuantSpec
    task: Task
    run_dir: Path
    logger: RunLogger
    checkpoints: RunCheckpoints
    device: torch.device
    code_version: str  # provenance.git_sha() when the run started
    stage_seconds: dict[str, float] = field(default_factory=dict)  # training time per stage
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_samples: int = 0  # samples in the last evaluation
    holdout_samples: int = 0  # held-out validation images it was also scored on (dataset.holdout)
    calibration_samples: int = 0  # training images post-training quantization calibrated on

    def train(self, model: nn.Module, stage: str, name: str | None = None) -> None:
        """Train one stage, checkpointing every epoch; a resumed run loads a finished stage's
        weights instead of training it, and continues an unfinished one. `name` (default the
        stage's) names its checkpoint and log lines: the float control trains the stages of
        the quantized model under names of its own."""
        name = name or stage
        stage_cfg = self.cfg.trainer[stage]
        epochs = stage_epochs(self.cfg, self.spec, stage)
        if epochs <= 0:
            return
        saved = self.checkpoints.load(name)
        earlier_seconds = saved["seconds"] if saved else 0.0
        if saved is not None and len(saved["losses"]) >= epochs:
            model.load_state_dict(saved["model"])
            self.stage_seconds[name] = earlier_seconds
            log.info("%s: all %d epochs were done before (checkpoint)", name, epochs)
            return
        seed_stage(self.cfg.fp_seed if stage == "fp" else self.cfg.seed, stage)
        trainer = self.cfg.trainer
        start = time.perf_counter()

        def end_of_epoch(state: dict[str, Any]) -> None:
            state["seconds"] = earlier_seconds + time.perf_counter() - start
            self.checkpoints.save(name, state)
            self.logger.log(
                {f"{name}/loss": state["losses"][-1], f"{name}/epoch": len(state["losses"])}
            )

        train_stage(
            model,
            self.task.train_loader(),
            self.task.loss,
            stage=name,
            epochs=epochs,
            lr=stage_cfg.lr,
            optimizer=trainer.optimizer,
            weight_decay=trainer.weight_decay,
            max_batches=stage_batches(trainer, stage),
            grad_clip=trainer.grad_clip,
            warmup_steps=0 if stage == "fp" else trainer.warmup_steps,
            progress=trainer.progress,
            resume=saved,
            on_epoch_end=end_of_epoch,
        )
        self.stage_seconds[name] = earlier_seconds + time.perf_counter() - start

    @property
    def train_seconds(self) -> float:
        """Training time of the run: its stages' times, summed in stage order (the float
        control's are not the method's and stay out)."""
        return sum(seconds for name, seconds in self.stage_seconds.items() if name in STAGES)

    def evaluate(self, model: nn.Module, name: str, final: bool = False) -> float:
        """Score `model` as `name` on the evaluation set, and as val_<name> on the held-out
        validation images when dataset.holdout holds some out; the final model's per-image
        predictions on the evaluation set (tasks that make them) go to predictions.json in the
        run directory, the others' to predictions_<name>."""
        if not distributed.is_main():  # rank 0 scores the whole evaluation set alone
            return float("nan")
        predictions = self.run_dir / ("predictions.json" if final else f"predictions_{name}.json")
        loader = self.task.eval_loader()
        self.eval_samples = len(loader.dataset)
        # the loader already holds trainer.max_eval_batches' subset: no second cap here
        scored = [(name, loader, predictions)]
        holdout = self.task.holdout_loader()
        if holdout is not None:  # the same model on the held-out validation images
            self.holdout_samples = len(holdout.dataset)
            scored.append((f"{VALIDATION}{name}", holdout, None))
        for key, images, path in scored:
            self.record_scores(key, self.task.evaluate(model, images, predictions_path=path))
        return self.metrics[name][self.task.metric]

    def scores_of(self, name: str) -> dict[str, dict[str, float]]:
        """The scores of model `name` and, where held-out images were scored too, of
        val_<name>: what a cache of its scores keeps."""
        keys = (name, f"{VALIDATION}{name}")
        return {key: self.metrics[key] for key in keys if key in self.metrics}

    def record_scores(self, key: str, metrics: dict[str, float], source: str = "") -> None:
        """Keep one model's scores as `key` (metrics.json, the row), log them and send them to
        the logger; `source` says where scores not computed here came from (a cache)."""
        self.metrics[key] = metrics
        self.logger.log({f"eval/{key}/{metric}": value for metric, value in metrics.items()})
        shown = list(metrics.items())[:LOGGED_METRICS]  # all of them go to metrics.json
        scores = ", ".join(f"{k} {v:.4g}" for k, v in shown)
        log.info("%s model: %s%s", key, scores, f" (from {source})" if source else "")

    def probe(self, qmodel: nn.Module, name: str) -> dict[str, dict[str, float]]:
        """Score a copy of `qmodel` as it stands between two stages (trainer.probes), and
        record how much its activation clips cut off. Quantizers that have not seen data yet
        (min-max clips, LSQ and PACT steps before QAT) take one training batch first, as
        training would give them, never a validation batch; the run's model is untouched."""
        if not (self.cfg.trainer.probes and distributed.is_main()):
            return {}
        probed = copy.deepcopy(qmodel).eval()
        batch = next(batch for batch in self.task.train_loader() if batch is not None)
        with torch.no_grad():
            call_model(probed, move_batch(self.task.model_inputs(batch), self.device))
        with recording_activation_clips(probed) as clips:
            self.evaluate(probed, name)
        return clips
