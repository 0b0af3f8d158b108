"""One run, stage by stage: fp -> reshape -> qat -> fold -> eval -> report.

Each stage is a small function of the run's state. Every stage that trains reseeds from the
run's seed and its own name, so a cached float model gives the same later stages as a float
model trained in this run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
import uuid
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gdrq_bench import distributed, provenance
from gdrq_bench.checkpoint import RunCheckpoints, run_key
from gdrq_bench.data.bad_samples import POLICIES as BAD_SAMPLE_POLICIES
from gdrq_bench.data.bad_samples import SKIP_LOG, BadSamplePolicy
from gdrq_bench.engine import train_stage
from gdrq_bench.errors import ConfigError, DataError, check_choice
from gdrq_bench.output_dirs import check_output_dirs
from gdrq_bench.presets import presets_extending
from gdrq_bench.quant import (
    CLIP,
    FLOAT,
    FLOAT_BITS,
    QUANT,
    QuantSpec,
    commit_scale_clip,
    fold_model,
    get_method,
    layer_weight_stats,
    quantize_model,
    recording_activation_clips,
    set_mode,
    verify_fold,
)
from gdrq_bench.quant.fold import call_model, move_batch
from gdrq_bench.results import append_row, table_path
from gdrq_bench.run_logger import RunLogger, start_logger
from gdrq_bench.tasks.base import Task

log = logging.getLogger(__name__)

# QuantSpec field -> the config key a user sets, so errors name what to change.
SPEC_KEYS = {
    "method": "method.name",
    "w_bits": "bits.w",
    "a_bits": "bits.a",
    "groups": "grouping.groups",
    "group_strategy": "grouping.strategy",
    "alpha_every": "grouping.alpha_every",
    "regroup_every": "grouping.regroup_every",
    "search_points": "grouping.search_points",
    "alpha": "grouping.alpha",
    "k_w": "method.k_w",
    "k_a": "method.k_a",
    "weight_stat": "method.weight_stat",
    "act_stat": "method.act_stat",
    "act_momentum": "method.act_momentum",
    "first_last_bits": "method.first_last_bits",
    "weight_grad": "method.weight_grad",
    "clip_style": "method.clip_style",
    "scale_clip_qat": "method.scale_clip_qat",
    "skip": "method.skip",
}


def build_spec(cfg: DictConfig) -> QuantSpec:
    """The QuantSpec of a run config; a bad value raises ConfigError naming its config key."""
    spec = QuantSpec(
        method=cfg.method.name,
        w_bits=cfg.bits.w,
        a_bits=cfg.bits.a,
        groups=cfg.grouping.groups,
        group_strategy=cfg.grouping.strategy,
        alpha=cfg.grouping.alpha,
        k_w=cfg.method.k_w,
        k_a=cfg.method.k_a,
        weight_stat=cfg.method.weight_stat,
        act_stat=cfg.method.act_stat,
        act_momentum=cfg.method.act_momentum,
        first_last_bits=cfg.method.first_last_bits,
        skip=list(cfg.method.skip),
        alpha_every=cfg.grouping.alpha_every,
        regroup_every=cfg.grouping.regroup_every,
        search_points=cfg.grouping.search_points,
        weight_grad=cfg.method.weight_grad,
        clip_style=cfg.method.clip_style,
        scale_clip_qat=cfg.method.scale_clip_qat,
    )
    try:
        return spec.validate()
    except ValueError as error:
        raise spec_error(error) from None


def spec_error(error: ValueError) -> ConfigError:
    """The quant package's ValueError ("groups=9 ...") as a ConfigError naming the config key
    ("grouping.groups=9 ...")."""
    message = str(error)
    for field_name, key in SPEC_KEYS.items():
        if message.startswith(f"{field_name}="):
            return ConfigError(key + message[len(field_name) :])
    return ConfigError(message)


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


LOGGED_METRICS = 4  # metrics per evaluation in the log; COCO has 12, VOC one per class


def seed_stage(seed: int, stage: str) -> None:
    """Seed torch for one stage from the run seed and the stage name."""
    torch.manual_seed(seed * 1000 + zlib.crc32(stage.encode()) % 1000)


def stage_epochs(cfg: DictConfig, spec: QuantSpec, stage: str) -> int:
    """Epochs of a training stage. Under trainer.equal_budget every method fine-tunes for
    reshape + qat epochs after the float stage: a method without a reshape stage spends the
    reshape epochs in QAT."""
    epochs = cfg.trainer[stage].epochs
    no_reshape = not get_method(spec.method).scale_clip
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


def finetune_epochs(cfg: DictConfig, spec: QuantSpec) -> int:
    """Epochs trained after the float stage (the results row's `finetune_epochs`)."""
    if spec.w_bits == spec.a_bits == FLOAT_BITS:
        return 0
    reshape = stage_epochs(cfg, spec, "reshape") if get_method(spec.method).scale_clip else 0
    return reshape + stage_epochs(cfg, spec, "qat")


@dataclass
class Run:
    cfg: DictConfig
    spec: QuantSpec
    task: Task
    run_dir: Path
    logger: RunLogger
    checkpoints: RunCheckpoints
    device: torch.device
    train_seconds: float = 0.0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    fp_hash: str = ""  # the float model's weights_hash
    eval_samples: int = 0  # samples in the last evaluation

    def train(self, model: nn.Module, stage: str) -> None:
        """Train one stage, checkpointing every epoch; a resumed run loads a finished stage's
        weights instead of training it, and continues an unfinished one."""
        stage_cfg = self.cfg.trainer[stage]
        epochs = stage_epochs(self.cfg, self.spec, stage)
        if epochs <= 0:
            return
        saved = self.checkpoints.load(stage)
        earlier_seconds = saved["seconds"] if saved else 0.0
        if saved is not None and len(saved["losses"]) >= epochs:
            model.load_state_dict(saved["model"])
            self.train_seconds += earlier_seconds
            log.info("%s: all %d epochs were done before (checkpoint)", stage, epochs)
            return
        seed_stage(self.cfg.fp_seed if stage == "fp" else self.cfg.seed, stage)
        trainer = self.cfg.trainer
        start = time.perf_counter()

        def end_of_epoch(state: dict[str, Any]) -> None:
            state["seconds"] = earlier_seconds + time.perf_counter() - start
            self.checkpoints.save(stage, state)
            self.logger.log(
                {f"{stage}/loss": state["losses"][-1], f"{stage}/epoch": len(state["losses"])}
            )

        train_stage(
            model,
            self.task.train_loader(),
            self.task.loss,
            stage=stage,
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
        self.train_seconds += earlier_seconds + time.perf_counter() - start

    def evaluate(self, model: nn.Module, name: str, final: bool = False) -> float:
        """Score `model` as `name`; the final model's per-image predictions (tasks that make
        them) go to predictions.json in the run directory, the others' to predictions_<name>."""
        if not distributed.is_main():  # rank 0 scores the whole evaluation set alone
            return float("nan")
        predictions = self.run_dir / ("predictions.json" if final else f"predictions_{name}.json")
        loader = self.task.eval_loader()
        self.eval_samples = len(loader.dataset)
        metrics = self.task.evaluate(model, loader, self.cfg.trainer.max_eval_batches, predictions)
        self.metrics[name] = metrics
        self.logger.log({f"eval/{name}/{key}": value for key, value in metrics.items()})
        shown = list(metrics.items())[:LOGGED_METRICS]  # all of them go to metrics.json
        log.info("%s model: %s", name, ", ".join(f"{k} {v:.4g}" for k, v in shown))
        return metrics[self.task.metric]

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


# Task keys that only act after the float model is trained: they do not split its cache.
AFTER_FLOAT_TASK_KEYS = ("quantize", "voc_ap")


# Bump when a code change alters the float model a config trains (2: BatchNorm momentum of
# models trained from scratch; 3: the thread and process counts in effect, not the configured
# ones), so caches made before it are not reused.
FLOAT_CACHE_VERSION = 3


def float_cache_key(cfg: DictConfig) -> str:
    """Everything that decides the float model trained here."""
    trainer = cfg.trainer
    parts = {
        "version": FLOAT_CACHE_VERSION,
        "task": {
            key: value
            for key, value in OmegaConf.to_container(cfg.task, resolve=True).items()
            if key not in AFTER_FLOAT_TASK_KEYS
        },
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "fp": OmegaConf.to_container(trainer.fp, resolve=True),
        "train": [
            trainer.optimizer,
            trainer.weight_decay,
            trainer.batch_size,
            trainer.max_train_batches,
            trainer.grad_clip,
            # the thread count in effect changes CPU rounding, so the trained weights; the
            # process count the batches (batch_size is per process)
            torch.get_num_threads(),
            distributed.world_size(),
        ],
        "seed": cfg.fp_seed,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _load_checkpoint(model: nn.Module, path: str, model_name: str) -> None:
    """Float weights from a state_dict file (or a dict holding one under "model"); a file
    that is missing, not a state_dict or of another architecture is named in one line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"model.checkpoint={file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises pickle's, zipfile's or its own errors
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        message = f"model.checkpoint={file} is not a PyTorch state_dict file: {reason}"
        raise DataError(message) from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise DataError(f"model.checkpoint={file} holds a {type(state).__name__}, not a state_dict")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key} {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    misfit = f"model.checkpoint={file} does not fit model.name={model_name}:"
    if missing or unexpected:
        raise ConfigError(f"{misfit} missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    if reshaped:
        raise ConfigError(f"{misfit} other shapes: {'; '.join(reshaped[:3])}")
    model.load_state_dict(state)


def weights_hash(model: nn.Module) -> str:
    """A content hash of a model's parameters and buffers: rows that share a float model
    share it, whatever the cache or checkpoint it came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def stage_fp(run: Run, model: nn.Module) -> tuple[nn.Module, str]:
    """The float model (built by the task) and where its weights came from: checkpoint,
    pretrained, cache or trained here (from pretrained weights where they cover only a part);
    its weights_hash goes to run.fp_hash."""
    model, source = _float_weights(run, model)
    run.fp_hash = weights_hash(model)
    return model, source


def _float_weights(run: Run, model: nn.Module) -> tuple[nn.Module, str]:
    cfg = run.cfg
    if cfg.model.checkpoint:
        _load_checkpoint(model, cfg.model.checkpoint, cfg.model.name)
        return model, "checkpoint"
    if cfg.model.pretrained and run.task.pretrained_complete:
        return model, "pretrained"
    cache = Path(cfg.cache_dir).expanduser() / "fp" / f"{float_cache_key(cfg)}.pt"
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Parallel jobs of a sweep wait here while the first one trains the shared float model.
    # The processes of one distributed run train it together, so they take no lock.
    lock = FileLock(f"{cache}.lock") if distributed.world_size() == 1 else nullcontext()
    with lock:
        if cache.is_file():
            model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
            log.info("float model reused from %s", cache)
            return model, "cache"
        run.train(model, "fp")
        if distributed.is_main():
            partial = cache.with_suffix(f".{os.getpid()}.tmp")
            torch.save(model.state_dict(), partial)
            os.replace(partial, cache)
        distributed.barrier()
    return model, "trained"


def _merged(weights: dict[str, dict[str, Any]], acts: dict[str, dict[str, float]]) -> dict:
    """Per layer: the weight statistics, then the activation clip's."""
    return {name: {**entry, **acts.get(name, {})} for name, entry in weights.items()}


def stage_reshape(run: Run, qmodel: nn.Module) -> dict[str, dict[str, dict[str, Any]]]:
    """Scale-Clip fine-tune (clip, no rounding), probed after; weight statistics before and
    after it. Unless Scale-Clip goes on into QAT (method.scale_clip_qat), it is then written
    into the weights: QAT starts from the reshaped network and clips it by groups alone."""
    stats = {"before": layer_weight_stats(set_mode(qmodel, FLOAT))}
    if get_method(run.spec.method).scale_clip:
        run.train(set_mode(qmodel, CLIP), "reshape")
        stats["after"] = _merged(layer_weight_stats(qmodel), run.probe(qmodel, "reshape"))
        if not run.spec.scale_clip_qat:
            commit_scale_clip(qmodel)
    return stats


def stage_qat(run: Run, qmodel: nn.Module) -> None:
    """Quantization-aware fine-tune, probed before (rounding alone: post-training quantization
    of the float or reshaped model)."""
    run.probe(set_mode(qmodel, QUANT), "round")
    run.train(qmodel, "qat")


def stage_fold(run: Run, qmodel: nn.Module) -> tuple[nn.Module, dict[str, float]]:
    """Fold BN into the quantized model and prove it on evaluation batches."""
    qmodel.eval()
    batches = [
        run.task.model_inputs(batch)
        for batch in islice(run.task.eval_loader(), run.cfg.trainer.fold_check_batches)
        if batch is not None
    ]
    folded = fold_model(qmodel)
    check = verify_fold(run.task.fold_probe(qmodel), run.task.fold_probe(folded), batches)
    log.info("fold check (float64): max_abs %.3g, max_rel %.3g", check["max_abs"], check["max_rel"])
    return folded, check


def _mean(stats: dict[str, dict[str, float]] | None, key: str) -> float | str:
    if not stats:
        return ""
    return round(sum(layer[key] for layer in stats.values()) / len(stats), 4)


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it, so committed tables name no machine."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def result_row(
    run: Run, fp_source: str, stats: dict[str, Any], fold_err: float | None, command: str
) -> dict[str, Any]:
    """The results row of a finished run (results.COLUMNS, in order)."""
    cfg, spec, metric = run.cfg, run.spec, run.task.metric
    scores = {name: round(run.metrics[name][metric], 4) for name in ("fp", "quant", "folded")}
    grouped = get_method(spec.method).grouped
    return {
        "run_id": f"{run.run_dir.name}-{uuid.uuid4().hex[:6]}",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": provenance.git_sha(),
        "command": command,
        "task": run.task.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "method": spec.method,
        "w_bits": spec.w_bits,
        "a_bits": spec.a_bits,
        "groups": spec.groups if grouped else 1,
        "group_strategy": spec.group_strategy if grouped else "",
        "alpha_mode": spec.alpha if grouped else "",
        "k_w": spec.k_w,
        "k_a": spec.k_a,
        "first_last_bits": spec.first_last_bits,
        "seed": cfg.seed,
        "metric": metric,
        **scores,
        "drop": round(scores["fp"] - scores["folded"], 4),
        "fold_err": "" if fold_err is None else f"{fold_err:.3g}",
        "kurtosis_before": _mean(stats.get("before"), "kurtosis"),
        "kurtosis_after": _mean(stats.get("after"), "kurtosis"),
        "ql_before": _mean(stats.get("before"), "ql2"),
        "ql_after": _mean(stats.get("after"), "ql2"),
        "train_s": round(run.train_seconds, 1),
        "device": provenance.device_name(),
        "versions": provenance.versions(),
        "run_dir": _display_path(run.run_dir),
        "fp_source": fp_source,
        "skipped_samples": run.task.bad_samples.skipped(),
        "finetune_epochs": finetune_epochs(cfg, spec),
        # classification: the folded model's validation cross-entropy (nats per image)
        "nll": round(run.metrics["folded"]["nll"], 6) if "nll" in run.metrics["folded"] else "",
        "fp_hash": run.fp_hash,
        "eval_samples": run.eval_samples,
    }


def row_table(cfg: DictConfig, task: str) -> Path:
    """The table a run's row goes to: results_dir/<task>.csv, or results_dir/debug/<task>.csv
    for a run on capped batches (trainer.max_train_batches or max_eval_batches, as in
    trainer=smoke), which gdrq-board does not read."""
    capped = cfg.trainer.max_train_batches is not None or cfg.trainer.max_eval_batches is not None
    return table_path(Path(cfg.results_dir), task, debug=capped)


def stage_report(
    run: Run, fp_source: str, stats: dict[str, Any], fold_err: float | None, command: str
) -> dict[str, Any]:
    """Write the run's files, then append the results row and print the summary; returns the
    row. The row goes last, so a run that fails on the way leaves none."""
    row = result_row(run, fp_source, stats, fold_err, command)
    (run.run_dir / "layer_stats.json").write_text(json.dumps(stats, indent=1))
    if "after" in stats:
        run.logger.log_weight_histogram(stats, run.run_dir)
    metrics = {  # NaN (a VOC class without ground truth) is not JSON: null
        name: {k: None if math.isnan(v) else v for k, v in values.items()}
        for name, values in run.metrics.items()
    }
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    append_row(row_table(run.cfg, run.task.name), row)  # last: the commit
    log.info("summary\n%s", summary_table(row))
    if not run.spec.w_bits == run.spec.a_bits == FLOAT_BITS:
        log.info("%s by stage: %s", run.task.metric, stage_trail(run.metrics, run.task.metric))
    return row


# metrics.json's names of the models scored between stages, in stage order, as the trail
# calls them ("quant" is the model after QAT)
STAGE_NAMES = {"fp": "fp", "reshape": "reshape", "round": "round", "quant": "qat"}


def stage_trail(metrics: dict[str, dict[str, float]], metric: str) -> str:
    """Where the primary metric went, stage by stage: "fp 99.72 -> reshape 98.33 -> ..."."""
    steps = [
        f"{stage} {metrics[name][metric]:.2f}"
        for name, stage in STAGE_NAMES.items()
        if name in metrics
    ]
    return " -> ".join([*steps, f"folded {metrics['folded'][metric]:.2f}"])


def summary_table(row: dict[str, Any]) -> str:
    lines = [
        f"{'':16}{row['metric']:>10}",
        *(f"{name:16}{row[name]:>10}" for name in ("fp", "quant", "folded", "drop")),
        f"{'fold_err':16}{row['fold_err']:>10}",
        f"{'':16}{'before':>10}{'after':>10}",
        f"{'kurtosis':16}{row['kurtosis_before']!s:>10}{row['kurtosis_after']!s:>10}",
        f"{'QL_2':16}{row['ql_before']!s:>10}{row['ql_after']!s:>10}",
    ]
    return "\n".join(lines)


def quantized_stages(run: Run, model: nn.Module) -> tuple[dict[str, Any], float]:
    """reshape -> qat -> fold -> eval of a quantized copy; (weight statistics, fold error).
    In a distributed run the other processes stop after training, rank 0 goes on alone."""
    qmodel = quantize_model(model, run.spec, run.task.quant_scope).to(run.device)
    stats = stage_reshape(run, qmodel)
    stage_qat(run, qmodel)
    if not distributed.is_main():
        return stats, float("nan")
    folded, check = stage_fold(run, qmodel)
    with recording_activation_clips(qmodel) as clips:
        run.evaluate(qmodel, "quant")
    stats["final"] = _merged(layer_weight_stats(qmodel), clips)
    run.evaluate(folded, "folded", final=True)
    return stats, check["max_rel"]


def run_pipeline(cfg: DictConfig, command: str, run_dir: Path) -> dict[str, Any] | None:
    """Validate everything that can be checked cheaply, then run the stages in order; the
    results row (None on the processes of a distributed run other than rank 0)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except Exception as error:  # omegaconf's errors name the key in `full_key`
        key = getattr(error, "full_key", "") or "config"
        raise ConfigError(f"{key}: {getattr(error, 'msg', error)}") from None
    spec = build_spec(cfg)
    if cfg.model.pretrained and cfg.model.checkpoint:
        raise ConfigError("model.pretrained=true and model.checkpoint are both set; choose one")
    check_output_dirs(cfg)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    bad_samples = bad_sample_policy(cfg, run_dir)
    task = build_task(cfg, bad_samples)
    seed_stage(cfg.fp_seed, "init")  # the float model's initial weights
    model = task.build_model()
    try:  # the checks that need the model's layers (groups per layer), before any training
        quantize_model(model, spec, task.quant_scope)
    except ValueError as error:
        raise spec_error(error) from None
    distributed.start()
    try:
        return _run_stages(cfg, spec, task, model, command, run_dir)
    finally:
        distributed.stop()


def _run_stages(
    cfg: DictConfig, spec: QuantSpec, task: Task, model: nn.Module, command: str, run_dir: Path
) -> dict[str, Any] | None:
    main = distributed.is_main()
    if distributed.world_size() > 1:
        command = f"torchrun --nproc-per-node={distributed.world_size()} --no-python {command}"
    checkpoints = RunCheckpoints(
        Path(cfg.checkpoint_dir).expanduser() / run_key(cfg), cfg.trainer.resume, writer=main
    )
    device = distributed.device(cfg.trainer.device)
    logger = start_logger(cfg, run_dir) if main else RunLogger()
    run = Run(cfg, spec, task, run_dir, logger, checkpoints, device)
    row = None
    try:
        model, fp_source = stage_fp(run, model.to(device))
        float_baseline = spec.w_bits == spec.a_bits == FLOAT_BITS  # nothing to quantize
        run.evaluate(model, "fp", final=float_baseline)
        distributed.barrier()
        if float_baseline:
            run.metrics["quant"] = run.metrics["folded"] = run.metrics.get("fp", {})
            stats, fold_err = {}, None
        else:
            stats, fold_err = quantized_stages(run, model)
        if main:
            row = stage_report(run, fp_source, stats, fold_err, command)
            checkpoints.finish()
    finally:
        run.logger.finish(row)
    return row
