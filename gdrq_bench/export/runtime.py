"""Running an exported graph in onnxruntime (CPU): sessions, a module view for the tasks'
evaluators, and the op types onnxruntime's optimizer left in a graph."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from gdrq_bench.config.errors import ExportError


def session(
    model: onnx.ModelProto, threads: int | None = None, optimized_path: Path | None = None
) -> ort.InferenceSession:
    """A CPU session of `model` at onnxruntime's full graph optimization; `threads` intra-op
    threads (None: onnxruntime's default); the optimized graph written to `optimized_path`
    if given."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: not the note on saving an optimized graph
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def run(sess: ort.InferenceSession, x: Tensor) -> list[Tensor]:
    """Every output of the session for one float input batch."""
    name = sess.get_inputs()[0].name
    outputs = sess.run(None, {name: x.detach().cpu().float().numpy()})
    return [torch.from_numpy(output) for output in outputs]


class OnnxModule(nn.Module):
    """A session seen as a module (inputs and outputs on the CPU), so a task's evaluator
    scores an exported graph as it scores the torch models."""

    def __init__(self, sess: ort.InferenceSession) -> None:
        super().__init__()
        self.session = sess

    def forward(self, x: Tensor) -> Tensor:
        return run(self.session, x)[0]


def optimized_op_types(model: onnx.ModelProto, threads: int | None = None) -> Counter[str]:
    """How many nodes of each op type onnxruntime's fully optimized graph holds: shows which
    integer kernels (QLinearConv, QLinearAdd, QGemm, ...) the QDQ graph was fused into."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "optimized.onnx"
        session(model, threads, optimized_path=path)
        optimized = onnx.load(str(path))
    return Counter(node.op_type for node in optimized.graph.node)


# op types of the integer kernels onnxruntime fuses a folded conv or linear layer into, and of
# the float ones it would run instead
INTEGER_LAYER_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat")
FLOAT_LAYER_OPS = ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul")


def check_integer_kernels(ops: Counter[str], layers: int) -> None:
    """Every one of the graph's `layers` folded layers runs as an integer kernel in
    onnxruntime's optimized graph (op counts `ops`), else an ExportError."""
    fused = sum(ops[op] for op in INTEGER_LAYER_OPS)
    left = {op: ops[op] for op in FLOAT_LAYER_OPS if ops[op]}
    if fused != layers or left:
        raise ExportError(
            f"onnxruntime fused {fused} of the {layers} layers of the QDQ graph into integer "
            f"kernels; float layers left: {left}"
        )
