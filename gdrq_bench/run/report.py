"""The report stage: the run's files (layer_stats.json, metrics.json, timings.json), its
results row (the commit: written last) and the summary in the log."""

from __future__ import annotations

import json
import logging
import math
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gdrq_bench.config.errors import FoldError, GdrqError
from gdrq_bench.config.schema import SPEC_KEYS
from gdrq_bench.quant import FLOAT_BITS, QuantSpec, get_method, method_knobs
from gdrq_bench.reporting import provenance
from gdrq_bench.reporting.results import KNOB_COLUMNS, append_row, table_path
from gdrq_bench.run.budget import finetune_epochs, is_ptq, stage_batches
from gdrq_bench.run.calibrate import CALIBRATION_CHOICES
from gdrq_bench.run.context import STAGES, VALIDATION, Run
from gdrq_bench.run.keys import spec_hash
from gdrq_bench.run.outcome import FloatModel, QuantizedResult

log = logging.getLogger(__name__)

MODELS = ("fp", "quant", "folded")  # the models whose score has a column
# the models whose held-out validation score has a column (val_fp, val_fp_ft, val_folded)
VALIDATED = ("fp", "fp_ft", "folded")
# the models scored between stages, in stage order, by the names metrics.json, the row and
# the log all give them ("quant" is the model after QAT)
TRAIL = ("fp", "reshape", "round", "quant", "folded")


def stage_report(
    run: Run, float_model: FloatModel, result: QuantizedResult, command: str
) -> dict[str, Any]:
    """Write the run's files, then append the results row and print the summary; returns the
    row. The row goes last, so a run that fails on the way leaves none."""
    row = result_row(run, float_model, result, command)
    stats = result.layer_stats
    (run.run_dir / "layer_stats.json").write_text(json.dumps(stats, indent=1))
    if "after" in stats:
        run.logger.log_weight_histogram(stats, run.run_dir)
    metrics = {  # NaN (a VOC class without ground truth) is not JSON: null
        name: {k: None if math.isnan(v) else v for k, v in values.items()}
        for name, values in run.metrics.items()
    }
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    timings = {  # seconds; a stage loaded from a finished checkpoint counts its saved time
        "train_s": run.train_seconds,
        "stage_train_s": {k: v for k, v in run.stage_seconds.items() if k in STAGES},
        # the float control's stages (none when its score came from the cache)
        "float_control_train_s": {k: v for k, v in run.stage_seconds.items() if k not in STAGES},
    }
    (run.run_dir / "timings.json").write_text(json.dumps(timings, indent=1))
    append_row(row_table(run.cfg, run.task.name), row)  # last: the commit
    log.info("summary\n%s", summary_table(row))
    if not run.spec.w_bits == run.spec.a_bits == FLOAT_BITS:
        log.info("%s by model: %s", run.task.metric, stage_trail(run.metrics, run.task.metric))
    return row


def result_row(
    run: Run, float_model: FloatModel, result: QuantizedResult, command: str
) -> dict[str, Any]:
    """The results row of a finished run (results.COLUMNS, in order)."""
    cfg, spec, metric = run.cfg, run.spec, run.task.metric
    stats, fold_err = result.layer_stats, result.fold_err
    deployed = _deployed(run)
    final = _score(run, deployed)
    # a float run (nothing to quantize) deploys its float model: its quant and folded
    # columns carry that score, so tables and boards read one column for every row
    scores = {name: _score(run, "fp" if deployed == "fp" else name) for name in MODELS}
    control = _score(run, "fp_ft")
    return {
        "run_id": f"{run.run_dir.name}-{uuid.uuid4().hex[:6]}",
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": provenance.code_version_since(run.code_version),
        "command": command,
        "task": run.task.name,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        **spec_columns(spec, post_training=is_ptq(cfg)),
        "spec_hash": spec_hash(cfg, spec),
        # the equal-budget float control (run/control.py): its score, and the drop against it
        "fp_ft": _or_empty(control),
        "drop_ft": round(control - final, 4) if control is not None else "",
        # dataset.holdout: the metric on the held-out training images (validation split)
        "val_samples": run.holdout_samples or "",
        **{
            f"{VALIDATION}{column}": _or_empty(_score(run, f"{VALIDATION}{model}"))
            for column, model in zip(VALIDATED, ("fp", "fp_ft", deployed), strict=True)
        },
        "seed": cfg.seed,
        "metric": metric,
        **{name: _or_empty(score) for name, score in scores.items()},
        "drop": round(scores["fp"] - final, 4),
        "fold_err": "" if fold_err is None else f"{fold_err:.3g}",
        "kurtosis_before": _mean(stats.get("before"), "kurtosis"),
        "kurtosis_after": _mean(stats.get("after"), "kurtosis"),
        "ql_before": _mean(stats.get("before"), "ql2"),
        "ql_after": _mean(stats.get("after"), "ql2"),
        "train_s": round(run.train_seconds, 1),
        "device": provenance.device_name(),
        "versions": provenance.versions(),
        "run_dir": _display_path(run.run_dir),
        "fp_source": float_model.source,
        "skipped_samples": run.task.bad_samples.skipped(),
        "finetune_epochs": finetune_epochs(cfg, spec),
        "finetune_batches": _finetune_batches(cfg, spec),
        # classification: the folded model's validation cross-entropy (nats per image)
        "nll": round(run.metrics[deployed]["nll"], 6) if "nll" in run.metrics[deployed] else "",
        "fp_hash": float_model.weights_hash,
        "eval_samples": run.eval_samples,
        # export=exact/both: the exact ONNX graph's max abs difference to the folded model
        # (0); export=qdq/both: the metric through onnxruntime's int8 kernels, and the share
        # of images whose top-1 equals the folded model's (classification)
        **{key: result.exported.get(key, "") for key in ("exact_diff", "int8", "int8_agree")},
        # the check after training that failed (fold, export): the figures above are what
        # was measured; gdrq-board leaves such rows out
        "failed": _failed_check(result.failure),
        "schedule": cfg.trainer.schedule,
        **_calibration_columns(run),
    }


def _calibration_columns(run: Run) -> dict[str, Any]:
    """Post-training quantization's calibration images and choices; empty under QAT, and the
    choices empty where another library calibrates the model (Method.build: its own
    statistics, none of trainer.calibrate's rules)."""
    if not is_ptq(run.cfg):
        return {"calib_samples": "", **dict.fromkeys(CALIBRATION_CHOICES, "")}
    if get_method(run.spec.method).build is not None:
        choices = dict.fromkeys(CALIBRATION_CHOICES, "")
        return {"calib_samples": run.calibration_samples or "", **choices}
    settings = run.cfg.trainer.calibrate
    act_range, rounding = settings.act_range, settings.rounding
    return {  # each with the knob that qualifies it: `percentile 99.99`, `adaround 1000`
        "calib_samples": run.calibration_samples or "",
        "act_range": f"percentile {settings.percentile:g}"
        if act_range == "percentile"
        else act_range,
        "rounding": f"adaround {settings.adaround_iterations}"
        if rounding == "adaround"
        else rounding,
        "bn_reestimate": str(settings.bn_reestimate).lower(),
        "bias_correction": str(settings.bias_correction).lower(),
    }


def _deployed(run: Run) -> str:
    """The model a row's drop, drop_ft, nll and val_folded are of: the folded one; the
    quantized one where the method does not fold (Brevitas keeps BN apart); the float one in
    a float run."""
    return next(name for name in ("folded", "quant", "fp") if name in run.metrics)


def spec_columns(spec: QuantSpec, post_training: bool = False) -> dict[str, Any]:
    """Each QuantSpec knob's column: its value where the run's method reads it (method_knobs;
    a post-training run reads no training knob), empty where it changes nothing; `groups` is,
    for a method that does not read it, the groups it has (1 per tensor, or per_channel)."""
    knobs = method_knobs(spec.method, post_training)
    columns = {
        KNOB_COLUMNS.get(name, name): _cell(getattr(spec, name)) if name in knobs else ""
        for name in SPEC_KEYS
    }
    if "groups" not in knobs:
        columns["groups"] = get_method(spec.method).weight_groups
    return columns


def _failed_check(failure: GdrqError | None) -> str:
    """The check after training that failed the run (`fold`, `export`); empty if none."""
    if failure is None:
        return ""
    return "fold" if isinstance(failure, FoldError) else "export"


def _finetune_batches(cfg: DictConfig, spec: QuantSpec) -> int | str:
    """Batches per fine-tuning epoch; empty where the stages take whole epochs or the run
    does not fine-tune."""
    batches = stage_batches(cfg.trainer, "qat")
    return "" if batches is None or finetune_epochs(cfg, spec) == 0 else batches


def _score(run: Run, name: str) -> float | None:
    """The primary metric of model `name`, rounded as the row shows it; None if not scored
    (an empty cell)."""
    return round(run.metrics[name][run.task.metric], 4) if name in run.metrics else None


def _or_empty(value: float | None) -> float | str:
    return "" if value is None else value


def _cell(value: Any) -> Any:
    """A knob's value as a table cell: a list (skip patterns) joined by ';'."""
    return ";".join(value) if isinstance(value, list) else value


def row_table(cfg: DictConfig, task: str) -> Path:
    """The table a run's row goes to: results_dir/<task>.csv, or results_dir/debug/<task>.csv
    for a run on capped batches (trainer.max_train_batches or max_eval_batches, as in
    trainer=smoke), which gdrq-board does not read."""
    capped = cfg.trainer.max_train_batches is not None or cfg.trainer.max_eval_batches is not None
    return table_path(Path(cfg.results_dir), task, debug=capped)


def stage_trail(metrics: dict[str, dict[str, float]], metric: str) -> str:
    """Where the primary metric went, model by model: "fp 99.72 -> reshape 98.33 -> ..."."""
    return " -> ".join(f"{name} {metrics[name][metric]:.2f}" for name in TRAIL if name in metrics)


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
