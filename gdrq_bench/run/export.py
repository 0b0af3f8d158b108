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
from itertools import islice
from typing import Any

import torch
from torch import Tensor, nn

from gdrq_bench.errors import ConfigError, ExportError, check_choice
from gdrq_bench.quant import FLOAT_BITS, QuantSpec, quantized_layers
from gdrq_bench.run.context import Run

log = logging.getLogger(__name__)

EXPORTS = {"none": (), "exact": ("exact",), "qdq": ("qdq",), "both": ("exact", "qdq")}
EXPORTED_TASKS = ("classification",)
FOLDED_MODEL = "folded_model.pt"  # a failed export keeps the folded model here (torch.save)


def check_export(export: str, task: str, spec: QuantSpec) -> None:
    """The checks of `export=` before training: a known value, an exported task, a model
    with integer layers only, onnx and onnxruntime installed."""
    check_choice("export", export, list(EXPORTS))
    if export == "none":
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
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"export={export} needs {' and '.join(missing)}: pip install 'gdrq_bench[export]'"
        )


def stage_export(
    run: Run, qmodel: nn.Module, folded: nn.Module, fold_batches: list[Tensor]
) -> dict[str, Any]:
    """Export the folded model as `export=` asks (module docstring); the figures for the
    results row (empty when nothing is exported). A graph that fails its check (an
    ExportError) does not lose the trained model: it is kept in the run directory
    (FOLDED_MODEL), the figures measured up to the failure are returned for the row, and
    `run.failure` holds the error for the run to end with."""
    kinds = EXPORTS[run.cfg.export]
    if not kinds:
        return {}
    from gdrq_bench import export as onnx_export  # the optional extra: imported when asked for

    reference = copy.deepcopy(folded).float().cpu().eval()
    input_shape: list[Any] = ["batch", *fold_batches[0].shape[1:]]
    report: dict[str, Any] = {"opset": onnx_export.OPSET, "layers": _layer_bits(qmodel)}
    figures: dict[str, Any] = {}
    try:
        if "exact" in kinds:
            _export_exact(run, reference, input_shape, fold_batches, report, figures)
        if "qdq" in kinds:
            _export_qdq(run, reference, input_shape, report, figures)
    except ExportError as error:
        kept = run.run_dir / FOLDED_MODEL
        torch.save(folded, kept)
        report["error"] = str(error)
        run.failure = ExportError(
            f"{error} (the trained folded model is kept in {kept}; the row is written with "
            "failed=export)"
        )
    (run.run_dir / "export.json").write_text(json.dumps(report, indent=1))
    return figures


def _export_exact(
    run: Run,
    reference: nn.Module,
    input_shape: list[Any],
    fold_batches: list[Tensor],
    report: dict[str, Any],
    figures: dict[str, Any],
) -> None:
    """model_exact.onnx and its parity with the folded model (the difference is recorded
    also when it fails the run)."""
    import onnx

    from gdrq_bench import export as onnx_export

    model, outputs = onnx_export.export_exact(reference, input_shape)
    onnx.save(model, run.run_dir / "model_exact.onnx")
    report["exact"] = {"samples": sum(len(x) for x in fold_batches)}
    threads = run.cfg.trainer.threads
    try:
        difference = onnx_export.check_parity(reference, model, outputs, fold_batches, threads)
    except onnx_export.ParityError as error:
        figures["exact_diff"] = report["exact"]["max_abs_diff"] = error.difference
        raise
    figures["exact_diff"] = report["exact"]["max_abs_diff"] = difference
    log.info("exact ONNX graph: max abs difference %g to the folded model", difference)


def _export_qdq(
    run: Run,
    reference: nn.Module,
    input_shape: list[Any],
    report: dict[str, Any],
    figures: dict[str, Any],
) -> None:
    """model_qdq.onnx, its integer kernels checked and its metric through onnxruntime."""
    import onnx

    from gdrq_bench import export as onnx_export

    calibration = _training_inputs(run)
    model = onnx_export.export_qdq(reference, input_shape, calibration)
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
