"""The deployable QDQ graph: QuantizeLinear / DequantizeLinear pairs around float Conv, Gemm
and Add, which onnxruntime's optimizer fuses into QLinearConv, QGemm and QLinearAdd.

Per folded layer: its input levels (levels.py) are dequantized at d_a; the BN-merged
multiplier becomes the per-channel weight scale, s_w[c] = |M_c| / (d_a k_c), with the integer
weights stored as int8 sign(M_c) k_c W_int, where k_c = floor(127 / max|W_int[c]|) spreads 4-bit
weights over int8's range (the same products, a k_c times finer bias grid); the shift B_c becomes
an int32 bias at scale d_a s_w[c], as onnxruntime's fusion requires. A layer output whose only
consumer is another folded layer (through a ReLU) is quantized by that layer's own input
quantizer; every other output of a conv, an add or a pooling (a residual path, a fork) goes
through an 8-bit pair calibrated on the given batches (its min and max), since onnxruntime
fuses a conv only when its output feeds one QuantizeLinear. Hence the graph is approximate:
biases round to the int32 grid and residual paths to 8 bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, fx, nn

from gdrq_bench.export.builder import GraphBuilder
from gdrq_bench.export.exact import conv_attributes
from gdrq_bench.export.levels import SIGNED_ZERO_POINT, InputGrid, quantize_input
from gdrq_bench.export.lower import (
    ADDS,
    FLATTENS,
    PASS_THROUGH,
    RELUS,
    Lowering,
    is_global_pool,
    lower_model,
)
from gdrq_bench.quant.fold import FoldedLayer

INT8_TOP = 127
INT32_BIAS_LIMIT = 2**30  # |bias| in accumulator units stays well inside int32


class QdqFlavor:
    def __init__(self, graph: fx.GraphModule, ranges: dict[fx.Node, tuple[float, float]]) -> None:
        self.graph = graph
        self.requantized = {
            tail: ranges[tail]
            for node in graph.graph.nodes
            if self._produces(node)
            if (tail := _tail(graph, node)) is not None
        }

    def _produces(self, node: fx.Node) -> bool:
        """A node onnxruntime runs as an integer kernel, whose output needs one Q after it."""
        integer = isinstance(_module(self.graph, node), (FoldedLayer, nn.MaxPool2d))
        return integer or is_global_pool(self.graph, node) or _kind(self.graph, node) in ADDS

    def layer(self, lowering: Lowering, name: str, layer: FoldedLayer, x: str) -> str:
        b = lowering.b
        grid = InputGrid.of(name, layer.input)
        levels, x_scale, x_zero = quantize_input(b, x, grid, lowering.flattened)
        x_float = b.node("DequantizeLinear", [levels, x_scale, x_zero], f"{name}.x")
        weight, w_scale, bias, bias_scale = integer_parameters(layer, grid.step)
        w = _dequantized(b, f"{name}.weight", weight, w_scale, "int8")
        bias_float = _dequantized(b, f"{name}.bias", bias, bias_scale, "int32")
        if layer.conv_args is None:
            return b.node("Gemm", [x_float, w, bias_float], name, transB=1)
        return b.node("Conv", [x_float, w, bias_float], name, **conv_attributes(layer))

    def global_pool(self, lowering: Lowering, node: fx.Node, x: str) -> str:
        return lowering.b.node("GlobalAveragePool", [x], "pool")

    def after(self, lowering: Lowering, node: fx.Node, value: str) -> str:
        if node not in self.requantized:
            return value
        b = lowering.b
        scale, zero_point = calibrated_grid(*self.requantized[node])
        scale_name = b.constant(f"{node.name}.scale", scale, "float32")
        zero_name = b.constant(f"{node.name}.zero_point", zero_point, "uint8")
        levels = b.node("QuantizeLinear", [value, scale_name, zero_name], f"{node.name}_q")
        return b.node("DequantizeLinear", [levels, scale_name, zero_name], f"{node.name}_dq")


def _dequantized(
    b: GraphBuilder, hint: str, values: np.ndarray, scale: np.ndarray, dtype: str
) -> str:
    """DequantizeLinear of stored integers `values` with one scale per output channel."""
    inputs = [
        b.constant(f"{hint}_q", values, dtype),
        b.constant(f"{hint}_scale", scale, "float32"),
        b.constant(f"{hint}_zero_point", np.zeros(len(scale)), dtype),
    ]
    return b.node("DequantizeLinear", inputs, hint, axis=0)


def integer_parameters(
    layer: FoldedLayer, input_step: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weights, per-channel weight scales, int32 bias, per-channel bias scales) whose
    dequantized conv reproduces M_c acc_c + B_c up to the bias's rounding (module docstring)."""
    ints = layer.weight_int.detach().cpu().numpy().astype(np.int32)
    multiplier = layer.scale.detach().cpu().double().numpy()
    shift = layer.shift.detach().cpu().double().numpy()
    flat = np.abs(ints.reshape(len(ints), -1)).max(axis=1)
    spread = INT8_TOP // np.maximum(flat, 1)
    sign = np.where(multiplier < 0, -1, 1)
    weight = ints * (sign * spread).reshape(-1, *[1] * (ints.ndim - 1))
    w_scale = np.abs(multiplier) / (float(input_step) * spread)
    floor = np.abs(shift) / (float(input_step) * INT32_BIAS_LIMIT)
    w_scale = np.maximum(w_scale, np.maximum(floor, np.finfo(np.float32).tiny)).astype(np.float32)
    bias_scale = (np.float32(input_step) * w_scale).astype(np.float32)
    bias = np.round(shift / bias_scale.astype(np.float64))
    return weight.astype(np.int8), w_scale, bias.astype(np.int32), bias_scale


def calibrated_grid(low: float, high: float) -> tuple[np.float32, int]:
    """(scale, uint8 zero point) of an 8-bit grid covering [low, high]: zero point 0 for a
    non-negative tensor, else 128 and a symmetric range."""
    tiny = float(np.finfo(np.float32).tiny)
    if low >= 0:
        return np.float32(max(high / 255, tiny)), 0
    return np.float32(max(max(-low, high) / INT8_TOP, tiny)), SIGNED_ZERO_POINT


def export_qdq(
    folded: nn.Module, input_shape: list[Any], calibration: Iterable[Tensor]
) -> onnx.ModelProto:
    """The QDQ graph of an eval-mode folded model; the 8-bit grids of residual paths and
    forks from the ranges the folded model's tensors take on `calibration` batches."""
    model, _ = lower_model(
        folded, lambda graph: QdqFlavor(graph, tensor_ranges(graph, calibration)), input_shape
    )
    return model


class _RangeRecorder(fx.Interpreter):
    def __init__(self, graph: fx.GraphModule) -> None:
        super().__init__(graph)
        self.ranges: dict[fx.Node, tuple[float, float]] = {}

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        if isinstance(value, Tensor) and value.is_floating_point() and value.numel():
            low, high = value.min().item(), value.max().item()
            seen = self.ranges.get(node, (low, high))
            self.ranges[node] = (min(seen[0], low), max(seen[1], high))
        return value


@torch.no_grad()
def tensor_ranges(
    graph: fx.GraphModule, batches: Iterable[Tensor]
) -> dict[fx.Node, tuple[float, float]]:
    """(min, max) of every float tensor of the traced model over `batches`."""
    recorder = _RangeRecorder(graph)
    device = next(iter(graph.buffers())).device
    for x in batches:
        recorder.run(x.to(device))
    return recorder.ranges


def _module(graph: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return graph.get_submodule(node.target) if node.op == "call_module" else None


def _kind(graph: fx.GraphModule, node: fx.Node) -> Any:
    module = _module(graph, node)
    return type(module) if module is not None else node.target


def _passes(graph: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(_module(graph, node), PASS_THROUGH)


def _single_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _tail(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """Where an integer kernel's output is requantized: after its pass-throughs and a single
    ReLU; None when that tensor is quantized by the one folded layer it feeds, or is the
    model's output."""
    tail, relu_seen = node, False
    while (user := _single_user(tail)) is not None:
        relu = _kind(graph, user) in RELUS
        if not (_passes(graph, user) or (relu and not relu_seen)):
            break
        tail, relu_seen = user, relu_seen or relu
    consumers = _consumers(graph, tail)
    if any(c.op == "output" for c in consumers):
        return None
    if len(consumers) == 1 and isinstance(_module(graph, consumers[0]), FoldedLayer):
        return None
    return tail


def _consumers(graph: fx.GraphModule, node: fx.Node) -> list[fx.Node]:
    """The nodes that compute with node's value, looking through pass-throughs and Flatten."""
    found: list[fx.Node] = []
    for user in node.users:
        if _passes(graph, user) or _kind(graph, user) in FLATTENS:
            found += _consumers(graph, user)
        else:
            found.append(user)
    return found
