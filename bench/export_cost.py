"""What the exported integer model buys: latency of onnxruntime's int8 kernels (the QDQ graph
of gdrq-run export=qdq) against onnxruntime float, torch float and the folded simulation.

    python bench/export_cost.py [--models resnet18,resnet50] [--size 224] [--batches 1,8]
                                [--threads 1,2] [--budget 10]

For each model (torchvision, 10 classes, random weights), batch and thread count: the float
model in torch; the same model exported by torch.onnx (TorchScript exporter, opset 13) and run
by onnxruntime; GDRQ's W4A4 model (4 groups, clips seen on two batches of random images)
folded (quantize_model, fold_model) and run in torch, the folded simulation; and its QDQ
graph (gdrq_bench.export.export_qdq, residual paths calibrated on the same batches) run by
onnxruntime at full graph optimization. The four are timed in turn in one process (2 warm-up
rounds, then rounds within --budget seconds, at least 5); the table gives medians in ms and
the int8 graph's speed-up over each. onnxruntime gets `threads` intra-op threads, torch
torch.set_num_threads(threads).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import warnings

import onnx
import onnxruntime as ort
import torch
from step_cost import folded_copy, inference, time_in_turn
from torch import nn
from torchvision import models

from gdrq_bench.export import export_qdq, optimized_op_types, session
from gdrq_bench.export.runtime import run
from gdrq_bench.quant import QuantSpec

VARIANTS = ("onnxruntime int8 (QDQ)", "onnxruntime float", "torch float", "torch folded")


def float_onnx(model: nn.Module, images: torch.Tensor) -> onnx.ModelProto:
    """The float model through torch's TorchScript ONNX exporter, batch dimension free."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (images,),
            buffer,
            dynamo=False,
            opset_version=13,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def measure(name: str, size: int, batches: list[int], threads: list[int], budget: float) -> list:
    """Rows (model, batch, threads, four medians in ms, repeats) for one model."""
    torch.manual_seed(0)
    calibration = [torch.randn(8, 3, size, size) for _ in range(2)]
    float_model = getattr(models, name)(num_classes=10).eval()
    folded = folded_copy(float_model, QuantSpec(), 4, calibration[0])
    qdq = export_qdq(folded, ["batch", 3, size, size], calibration)
    fused = optimized_op_types(qdq)
    print(f"{name}: onnxruntime's optimized QDQ graph: {dict(fused)}", file=sys.stderr)
    float_graph = float_onnx(float_model, calibration[0])
    rows = []
    for thread_count in threads:
        torch.set_num_threads(thread_count)
        sessions = [session(qdq, thread_count), session(float_graph, thread_count)]
        for batch in batches:
            images = torch.randn(batch, 3, size, size)
            steps = [
                *(lambda s=s, x=images: run(s, x) for s in sessions),
                inference(float_model, images),
                inference(folded, images),
            ]
            times = time_in_turn(steps, budget, torch.device("cpu"))
            medians = [statistics.median(t) for t in times]
            rows.append((name, batch, thread_count, medians, len(times[0])))
            print(f"measured {name} b{batch} t{thread_count}", file=sys.stderr, flush=True)
    return rows


def table(rows: list, size: int) -> str:
    header = [
        "case",
        *(f"{variant} (ms)" for variant in VARIANTS),
        *(f"int8 speed-up over {variant}" for variant in VARIANTS[1:]),
        "timed rounds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, batch, threads, medians, repeats in rows:
        cells = [
            f"{name} {size}x{size} b{batch} {threads} thread{'s' if threads > 1 else ''}",
            *(f"{ms:.1f}" for ms in medians),
            *(f"{ms / medians[0]:.2f}x" for ms in medians[1:]),
            str(repeats),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,resnet50")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", default="1,2", help="thread counts, each timed")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per case's rounds")
    args = parser.parse_args(argv)

    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    rows = [
        row
        for name in args.models.split(",")
        for row in measure(name, args.size, batches, threads, args.budget)
    ]
    print(
        f"\nCPU, torch {torch.__version__}, onnxruntime {ort.__version__}; "
        "GDRQ W4A4, 4 groups, first and last layer 8-bit; medians of rounds timed in turn\n"
    )
    print(table(rows, args.size))


if __name__ == "__main__":
    main()
