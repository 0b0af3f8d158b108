"""The exact graph's proof: onnxruntime's outputs equal the float32 folded model's, bit for
bit, on the fold-check batches; on a difference, the first folded layer whose output differs
is found by running both again with every layer's output exposed.

The one float op whose result depends on the order of its arithmetic is the global average
pool. onnxruntime's GlobalAveragePool sums each plane in row order and divides by its size;
torch's mean sums in a vectorised order, so a pooled value can differ in its last bit, and the
quantizer after it may then round it to the next level. The reference therefore runs the
folded model with its pools summed in row order: every other op, integer or float glue, is
torch's own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import onnx
import torch
from torch import Tensor, fx, nn

from gdrq_bench.errors import ExportError
from gdrq_bench.export.lower import is_global_pool
from gdrq_bench.export.runtime import run, session
from gdrq_bench.export.trace import trace_folded
from gdrq_bench.quant.fold import FoldedLayer


class ParityError(ExportError):
    """The exact graph's outputs differ from the folded model's; names the first layer."""


def row_order_mean(x: Tensor) -> Tensor:
    """The mean of each H x W plane, summed in row order then divided by H * W, as
    onnxruntime's GlobalAveragePool computes it; shape (N, C, 1, 1)."""
    flat = x.flatten(2)
    total = flat[..., 0].clone()
    for index in range(1, flat.shape[-1]):
        total += flat[..., index]
    return (total / flat.shape[-1])[..., None, None]


class _Reference(fx.Interpreter):
    """The traced folded model, global average pools in row order; keeps each folded
    layer's output when asked."""

    def __init__(self, graph: fx.GraphModule, keep_layers: bool = False) -> None:
        super().__init__(graph)
        self.keep_layers = keep_layers
        self.layers: dict[str, Tensor] = {}

    def run_node(self, node: fx.Node) -> Any:
        if is_global_pool(self.module, node):
            value = row_order_mean(self.env[node.args[0]])
        else:
            value = super().run_node(node)
        layer = self.module.get_submodule(node.target) if node.op == "call_module" else None
        if self.keep_layers and isinstance(layer, FoldedLayer):
            self.layers[node.target] = value
        return value


def check_parity(
    folded: nn.Module,
    model: onnx.ModelProto,
    layer_outputs: dict[str, str],
    batches: Iterable[Tensor],
) -> float:
    """The largest absolute difference between the exact graph run by onnxruntime and the
    float32 folded model (on the CPU, pools in row order) over `batches`: 0.0, or a
    ParityError naming the first folded layer, in execution order, whose output differs."""
    graph = trace_folded(copy.deepcopy(folded).float().cpu().eval())
    sess = session(model)
    for x in batches:
        x = x.cpu().float()
        with torch.no_grad():
            expected = _Reference(graph).run(x)
        difference = (run(sess, x)[0] - expected).abs().max().item()
        if difference != 0.0:
            name, layer_difference = _first_difference(graph, model, layer_outputs, x)
            raise ParityError(
                f"exact ONNX graph differs from the float32 folded model: output max abs "
                f"difference {difference:.3g}; first differing layer {name} "
                f"(max abs difference {layer_difference:.3g})"
            )
    return 0.0


def _first_difference(
    graph: fx.GraphModule, model: onnx.ModelProto, layer_outputs: dict[str, str], x: Tensor
) -> tuple[str, float]:
    """(name, max abs difference) of the first folded layer whose output differs on x."""
    reference = _Reference(graph, keep_layers=True)
    with torch.no_grad():
        reference.run(x)
    exposed = copy.deepcopy(model)
    exposed.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(tensor) for tensor in layer_outputs.values()
    )
    outputs = run(session(exposed), x)[1:]
    for name, actual in zip(layer_outputs, outputs):
        difference = (actual - reference.layers[name]).abs().max().item()
        if difference != 0.0:
            return name, difference
    return "(none: the float ops after the last layer)", 0.0
