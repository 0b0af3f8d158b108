"""Lowering an fx-traced folded model to ONNX, node by node. The float glue (ReLU, residual
adds, pooling, flatten) is the same in both exported graphs; a `Flavor` lowers the folded
layers (exact integer ops, or QDQ) and may requantize a node's output (the QDQ graph)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Protocol

import onnx
import torch
from torch import fx, nn
from torch.nn import functional as F

from gdrq_bench.config.errors import ExportError
from gdrq_bench.export.builder import GraphBuilder
from gdrq_bench.export.trace import trace_folded
from gdrq_bench.quant.fold import FoldedLayer

INPUT = "input"
PASS_THROUGH = (nn.Identity, nn.Dropout)  # eval mode: identity (BN folded away is Identity)
RELUS = {nn.ReLU, F.relu, torch.relu, "relu"}
ADDS = {operator.add, torch.add, "add"}
FLATTENS = {torch.flatten, "flatten"}


class Flavor(Protocol):
    def layer(self, lowering: Lowering, name: str, layer: FoldedLayer, x: str) -> str:
        """The output (float) of folded layer `name` applied to tensor `x`."""

    def global_pool(self, lowering: Lowering, node: fx.Node, x: str) -> str:
        """The mean of each plane of `x`, the output of global average pool `node`."""

    def after(self, lowering: Lowering, node: fx.Node, value: str) -> str:
        """`value`, the lowered output of `node`, as its consumers should see it."""


class Lowering:
    """One walk over the traced graph: fx node -> ONNX tensor name."""

    def __init__(self, graph: fx.GraphModule, flavor: Flavor) -> None:
        self.graph, self.flavor = graph, flavor
        self.b = GraphBuilder(INPUT)
        self.values: dict[fx.Node, str] = {}
        # the tensor a Flatten output was made from: a quantizer may act before the Flatten
        self.flattened: dict[str, str] = {}
        self.layer_outputs: dict[str, str] = {}  # folded layer name -> its ONNX output

    def run(self, input_shape: list[Any]) -> tuple[onnx.ModelProto, dict[str, str]]:
        """The ONNX model, and each folded layer's output tensor name in execution order."""
        output = None
        for node in self.graph.graph.nodes:
            if node.op == "output":
                output = node.args[0]
                continue
            self.values[node] = self.flavor.after(self, node, self._lower(node))
        if not isinstance(output, fx.Node):
            raise ExportError("only models returning one tensor are exported (classification)")
        return self.b.model(input_shape, [self.values[output]]), self.layer_outputs

    def _lower(self, node: fx.Node) -> str:
        if node.op == "placeholder":
            return INPUT
        if node.op == "get_attr":
            raise ExportError(f"{node.target}: a tensor read inside forward is not exported")
        target: Any = node.target  # a function, or a method's name
        if node.op == "call_module":
            target = self.graph.get_submodule(node.target)
            if isinstance(target, FoldedLayer):
                out = self.flavor.layer(self, node.target, target, self.values[node.args[0]])
                self.layer_outputs[node.target] = out
                return out
        lower = self._float_op(target)
        if lower is None:
            raise ExportError(f"{_describe(node, target)} is not exported (no ONNX lowering)")
        return lower(node, target)

    def _float_op(self, target: Any) -> Callable[[fx.Node, Any], str] | None:
        kind = type(target) if isinstance(target, nn.Module) else target
        if isinstance(target, PASS_THROUGH):
            return lambda node, _: self.values[node.args[0]]
        if kind in RELUS:
            return lambda node, _: self.b.node("Relu", [self.values[node.args[0]]], "relu")
        if kind in ADDS:
            return self._add
        if kind in FLATTENS:
            return self._flatten
        if isinstance(target, nn.ReLU6):
            return self._relu6
        if isinstance(target, nn.MaxPool2d):
            return self._max_pool
        if isinstance(target, nn.AdaptiveAvgPool2d) or kind is F.adaptive_avg_pool2d:
            return self._global_pool
        return None

    def _input(self, node: fx.Node) -> str:
        return self.values[node.args[0]]

    def _add(self, node: fx.Node, _: Any) -> str:
        left, right = node.args[:2]
        if not (isinstance(left, fx.Node) and isinstance(right, fx.Node)) or node.kwargs:
            raise ExportError(f"{node.name}: only the sum of two tensors is exported")
        return self.b.node("Add", [self.values[left], self.values[right]], "add")

    def _relu6(self, node: fx.Node, _: Any) -> str:
        bounds = [self.b.constant("zero", 0.0, "float32"), self.b.constant("six", 6.0, "float32")]
        return self.b.node("Clip", [self._input(node), *bounds], "relu6")

    def _flatten(self, node: fx.Node, _: Any) -> str:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1 or len(node.args) > 2 or "end_dim" in node.kwargs:
            raise ExportError(f"{node.name}: only flatten(x, 1) is exported")
        source = self._input(node)
        out = self.b.node("Flatten", [source], "flatten", axis=1)
        self.flattened[out] = source
        return out

    def _max_pool(self, node: fx.Node, pool: nn.MaxPool2d) -> str:
        if pool.ceil_mode or _pair(pool.dilation) != [1, 1]:
            raise ExportError(f"{node.target}: only MaxPool2d without ceil_mode or dilation")
        padding = _pair(pool.padding)
        return self.b.node(
            "MaxPool",
            [self._input(node)],
            "maxpool",
            kernel_shape=_pair(pool.kernel_size),
            strides=_pair(pool.stride or pool.kernel_size),
            pads=padding + padding,
        )

    def _global_pool(self, node: fx.Node, target: Any) -> str:
        size = target.output_size if isinstance(target, nn.Module) else node.args[1]
        if _pair(size) != [1, 1]:
            raise ExportError(f"{node.name}: only adaptive average pooling to 1x1 is exported")
        return self.flavor.global_pool(self, node, self._input(node))


def lower_model(
    folded: nn.Module, flavor_of: Callable[[fx.GraphModule], Flavor], input_shape: list[Any]
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Trace `folded` and lower it with the flavor made for its graph."""
    graph = trace_folded(folded)
    return Lowering(graph, flavor_of(graph)).run(input_shape)


def is_global_pool(graph: fx.GraphModule, node: fx.Node) -> bool:
    """Whether `node` is an adaptive average pool (lowered to GlobalAveragePool)."""
    if node.op == "call_module":
        return isinstance(graph.get_submodule(node.target), nn.AdaptiveAvgPool2d)
    return node.op == "call_function" and node.target is F.adaptive_avg_pool2d


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value)] * 2


def _describe(node: fx.Node, target: Any) -> str:
    what = (
        type(target).__name__
        if isinstance(target, nn.Module)
        else getattr(target, "__name__", str(target))
    )
    return f"{node.target if node.op == 'call_module' else node.name} ({what})"
