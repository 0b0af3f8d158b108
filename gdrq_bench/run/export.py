"""The export stage (`export=none|exact|qdq|both`, issue 18): the folded model as ONNX graphs
in the run directory, proved and scored through onnxruntime.

- `exact` writes model_exact.onnx (integer ops, gdrq_bench/export/exact.py) and proves it equal
  to the float32 folded model, max abs difference 0, on the fold-check batches; a difference
  fails the run naming the first layer that differs.
- `qdq` writes model_qdq.onnx (gdrq_bench/export/qdq.py), its 8-bit residual grids calibrated
  on training batches, checks that onnxruntime fused every folded layer into an integer
  kernel, and scores it on the evaluation set as `int8` (metrics.json, the row's `int8`, and
  `int8_agree`: the share of images whose top-1 equals the folded model's).
- export.json holds the opset, each layer's bits, the parity figures and the fused op types.

A failed check fails the run after its row is written (marked failed, with the figures
measured) and the folded model is kept: training is never thrown away.

onnx and onnxruntime are imported only here, and only when an export is asked for: they are
the optional `export` extra. Only classification models are exported: torchvision's
detectors and segmenters return dicts and lists and decode boxes in Python, which this
exporter's one-tensor-in, one-tensor-out lowering does not cover.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn

from gdrq_bench.config.errors import ConfigError, ExportError, check_choice
from gdrq_bench.quant import FLOAT_BITS, QuantSpec, quantized_layers
from gdrq_bench.run.context import Run

log = logging.getLogger(__name__)

EXPORTED_TASKS = ("classification",)
FOLDED_MODEL = "folded_model.pt"  # a failed export keeps the folded model here (torch.save)
ONNX_MODULES = ("onnx", "onnxruntime")  # the optional `export` extra
NONE, BOTH = "none", "both"  # export=both: the two ONNX graphs, exact+qdq


@dataclass
class ExportJob:
    """What a format's writer gets: the run (its directory, config, task and evaluate), the
    folded model (a float32 CPU copy), its input shape (batch first, symbolic), the batches
    the fold was checked on, export.json's dict (the writer adds its own section) and the
    row's export figures (`exact_diff`, `int8`, `int8_agree`) it fills where they apply."""

    run: Run
    folded: nn.Module
    input_shape: list[Any]
    fold_batches: list[Tensor]
    report: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportFormat:
    """An export format: `write` writes its files into the run directory and checks them,
    raising ExportError when a check fails; `needs` names the modules it imports (checked
    before training, with the pip extra that installs them)."""

    write: Callable[[ExportJob], None]
    needs: tuple[str, ...] = ()
    extra: str = "export"


EXPORT_FORMATS: dict[str, ExportFormat] = {}


def register_export(name: str, export_format: ExportFormat) -> None:
    """Make `export=name` write `export_format` (a plugin module calls this on import: see
    the `plugins` key)."""
    if name in (NONE, BOTH) or "+" in name:
        raise ValueError(f"export format name {name!r} is reserved or holds '+'")
    EXPORT_FORMATS[name] = export_format


def export_kinds(export: str) -> tuple[str, ...]:
    """The formats `export=` asks for, in order: none, one name, names joined by '+', or both
    (exact+qdq)."""
    if export == NONE:
        return ()
    return ("exact", "qdq") if export == BOTH else tuple(export.split("+"))


def check_export(export: str, task: str, spec: QuantSpec) -> None:
    """The checks of `export=` before training: known formats, an exported task, a model
    with integer layers only, the formats' modules installed."""
    known = [NONE, *EXPORT_FORMATS, BOTH]
    for kind in export_kinds(export):
        check_choice("export", kind, known)
    if export == NONE:
        return
    if task not in EXPORTED_TASKS:
        raise ConfigError(
            f"export={export}: only classification models are exported; task={task}'s "
            "detector or segmenter is not (use export=none)"
        )
    if FLOAT_BITS in (spec.w_bits, spec.a_bits) or str(spec.first_last_bits) == "fp":
        raise ConfigError(
            f"export={export} exports integer layers only: bits.w and bits.a must be 2..8 and "
            f"method.first_last_bits not fp (got bits.w={spec.w_bits}, bits.a={spec.a_bits}, "
            f"method.first_last_bits={spec.first_last_bits})"
        )
    for kind in export_kinds(export):
        needed = EXPORT_FORMATS[kind]
        missing = [name for name in needed.needs if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(
                f"export={export} needs {' and '.join(missing)}: "
                f"pip install 'gdrq_bench[{needed.extra}]'"
            )


def stage_export(
    run: Run, qmodel: nn.Module, folded: nn.Module, fold_batches: list[Tensor]
) -> tuple[dict[str, Any], ExportError | None]:
    """Export the folded model as `export=` asks (module docstring); (the figures for the
    results row, empty when nothing is exported; the failure). A format that fails its
    check (an ExportError) does not lose the trained model: it is kept in the run directory
    (FOLDED_MODEL), the figures measured up to the failure are returned for the row, with
    the error for the run to end with."""
    kinds = export_kinds(run.cfg.export)
    if not kinds:
        return {}, None
    job = ExportJob(
        run,
        copy.deepcopy(folded).float().cpu().eval(),
        ["batch", *fold_batches[0].shape[1:]],
        fold_batches,
        {"layers": _layer_bits(qmodel)},
    )
    failure = None
    try:
        for kind in kinds:
            EXPORT_FORMATS[kind].write(job)
    except ExportError as error:
        kept = run.run_dir / FOLDED_MODEL
        torch.save(folded, kept)
        job.report["error"] = str(error)
        failure = ExportError(
            f"{error} (the trained folded model is kept in {kept}; the row is written with "
            "failed=export)"
        )
    (run.run_dir / "export.json").write_text(json.dumps(job.report, indent=1))
    return job.figures, failure


def _export_exact(job: ExportJob) -> None:
    """model_exact.onnx and its parity with the folded model (the difference is recorded
    also when it fails the run)."""
    import onnx

    from gdrq_bench import export as onnx_export

    run, report, figures = job.run, job.report, job.figures
    report["opset"] = onnx_export.OPSET
    model, outputs = onnx_export.export_exact(job.folded, job.input_shape)
    onnx.save(model, run.run_dir / "model_exact.onnx")
    report["exact"] = {"samples": sum(len(x) for x in job.fold_batches)}
    threads = run.cfg.trainer.threads
    try:
        difference = onnx_export.check_parity(job.folded, model, outputs, job.fold_batches, threads)
    except onnx_export.ParityError as error:
        figures["exact_diff"] = report["exact"]["max_abs_diff"] = error.difference
        raise
    figures["exact_diff"] = report["exact"]["max_abs_diff"] = difference
    log.info("exact ONNX graph: max abs difference %g to the folded model", difference)


def _export_qdq(job: ExportJob) -> None:
    """model_qdq.onnx, its integer kernels checked and its metric through onnxruntime."""
    import onnx

    from gdrq_bench import export as onnx_export

    run, report, figures = job.run, job.report, job.figures
    report["opset"] = onnx_export.OPSET
    calibration = _training_inputs(run)
    model = onnx_export.export_qdq(job.folded, job.input_shape, calibration)
    onnx.save(model, run.run_dir / "model_qdq.onnx")
    ops = onnx_export.optimized_op_types(model, run.cfg.trainer.threads)
    onnx_export.check_integer_kernels(ops, len(report["layers"]))
    sess = onnx_export.session(model, run.cfg.trainer.threads)
    score = run.evaluate(onnx_export.OnnxModule(sess), "int8")
    agree = _agreement(run)
    report["qdq"] = {
        "optimized_op_types": dict(sorted(ops.items())),
        "calibration_samples": sum(len(x) for x in calibration),
        run.task.metric: score,
        "agree_with_folded": agree,
    }
    figures["int8"], figures["int8_agree"] = round(score, 4), agree
    log.info(
        "QDQ ONNX graph: %s %.2f, top-1 agreement with the folded model %s%%",
        run.task.metric,
        score,
        agree,
    )


def _layer_bits(qmodel: nn.Module) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "w_bits": layer.weight_quantizer.bits,
            "a_bits": layer.input_quantizer.bits,
            "signed_input": layer.input_quantizer.signed,
        }
        for name, layer in quantized_layers(qmodel)
    }


def _training_inputs(run: Run) -> list[Tensor]:
    """trainer.fold_check_batches training batches: the QDQ graph's calibration, never
    validation images (the set it is scored on)."""
    batches = islice(run.task.train_loader(), run.cfg.trainer.fold_check_batches)
    return [run.task.model_inputs(batch).cpu() for batch in batches if batch is not None]


def _agreement(run: Run) -> float | str:
    """Percent of evaluation images whose top-1 through onnxruntime equals the folded
    model's (from their predictions files); '' for a task without per-image top-1."""
    folded = json.loads((run.run_dir / "predictions.json").read_text())
    int8 = json.loads((run.run_dir / "predictions_int8.json").read_text())
    if "predicted" not in folded:
        return ""
    same = sum(a == b for a, b in zip(folded["predicted"], int8["predicted"], strict=True))
    return round(100.0 * same / len(folded["predicted"]), 4)


register_export("exact", ExportFormat(_export_exact, needs=ONNX_MODULES))
register_export("qdq", ExportFormat(_export_qdq, needs=ONNX_MODULES))
