"""The exact graph's proof: onnxruntime's outputs equal the float32 folded model's, bit for
bit, on the fold-check batches; on a difference, the first folded layer whose output differs
is found by running both again with every layer's output exposed.

Between two integer layers every op of both is one IEEE 754 operation per element (a division
and rounding to levels, a cast, a multiply, an add, ReLU, max): correctly rounded, hence the
same bits on every CPU, whatever its vector width, thread count or library. Two parts of a
float32 model are not, and the reference computes them so that their order cannot matter:
- a layer's accumulation: onnxruntime's is int32, exact; torch's float32 conv is exact only
  while every partial sum stays under 2^24 (and with a direct algorithm). The reference
  accumulates the integer levels in float64, exact for any order (the products are integers
  under 2^16 and the sums under 2^53), then casts to float32 as onnxruntime's Cast does;
- a global average pool: a float32 sum depends on its order (a vectorised torch.mean and
  onnxruntime's GlobalAveragePool differ by CPU); both sides compute pool.py's exact mean.
The folded model evaluated in the run differs from this reference only where a pooled value
or a large accumulation lands within float32 rounding of a level boundary.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import onnx
import torch
from torch import Tensor, fx, nn

from gdrq_bench.config.errors import ExportError
from gdrq_bench.export.pool import PoolGrid, exact_mean, pool_grids
from gdrq_bench.export.runtime import run, session
from gdrq_bench.export.trace import trace_folded
from gdrq_bench.quant.fold import FoldedLayer


class ParityError(ExportError):
    """The exact graph's outputs differ from the folded model's; names the first layer and
    keeps the output's max abs difference (`difference`)."""

    def __init__(self, message: str, difference: float) -> None:
        super().__init__(message)
        self.difference = difference


def exact_layer_output(layer: FoldedLayer, x: Tensor) -> Tensor:
    """A folded layer's float32 output with its accumulation exact (module docstring)."""
    acc = layer.accumulate(layer.input(x).double())
    return layer.affine(acc.float())


class _Reference(fx.Interpreter):
    """The traced folded model with exact accumulations and exact global average pools; keeps
    each folded layer's output when asked."""

    def __init__(
        self, graph: fx.GraphModule, pools: dict[str, PoolGrid], keep_layers: bool = False
    ) -> None:
        super().__init__(graph)
        self.pools = pools
        self.keep_layers = keep_layers
        self.layers: dict[str, Tensor] = {}

    def run_node(self, node: fx.Node) -> Any:
        layer = self.module.get_submodule(node.target) if node.op == "call_module" else None
        if node.name in self.pools:
            return exact_mean(self.env[node.args[0]], self.pools[node.name])
        if not isinstance(layer, FoldedLayer):
            return super().run_node(node)
        value = exact_layer_output(layer, self.env[node.args[0]])
        if self.keep_layers:
            self.layers[node.target] = value
        return value


def check_parity(
    folded: nn.Module,
    model: onnx.ModelProto,
    layer_outputs: dict[str, str],
    batches: Iterable[Tensor],
    threads: int | None = None,
) -> float:
    """The largest absolute difference between the exact graph run by onnxruntime (`threads`
    intra-op threads, None: its default) and the float32 folded model (on the CPU, computed
    as the module docstring says) over `batches`: 0.0, or a ParityError naming the first
    folded layer, in execution order, whose output differs."""
    graph = trace_folded(copy.deepcopy(folded).float().cpu().eval())
    sess = session(model, threads)
    pools: dict[str, PoolGrid] | None = None
    for x in batches:
        x = x.cpu().float()
        if pools is None:  # the graph's input shape is fixed but for the batch: one pass
            pools = pool_grids(graph, list(x.shape))
        with torch.no_grad():
            expected = _Reference(graph, pools).run(x)
        difference = (run(sess, x)[0] - expected).abs().max().item()
        if difference != 0.0:
            name, layer_difference = _first_difference(graph, pools, model, layer_outputs, x)
            raise ParityError(
                f"exact ONNX graph differs from the float32 folded model: output max abs "
                f"difference {difference:.3g}; first differing layer {name} "
                f"(max abs difference {layer_difference:.3g})",
                difference,
            )
    return 0.0


def _first_difference(
    graph: fx.GraphModule,
    pools: dict[str, PoolGrid],
    model: onnx.ModelProto,
    layer_outputs: dict[str, str],
    x: Tensor,
) -> tuple[str, float]:
    """(name, max abs difference) of the first folded layer whose output differs on x."""
    reference = _Reference(graph, pools, keep_layers=True)
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
