"""The exact integer graph: per folded layer QuantizeLinear to uint8, a Clip to the b-bit
range, ConvInteger / MatMulInteger (uint8 x uint8, int32 accumulator), Cast to float,
Mul(M_c), Add(B_c); the float glue as in the folded model, global average pools summed exactly
(pool.py). It computes what the float32 folded model computes, bit for bit on every CPU
(check_parity asserts it; parity.py says what the reference is).

onnxruntime's CPU ConvInteger takes uint8 weights with one zero point per tensor (and no
4-bit types), so the signed weights W_int are stored as W_int + 128 with zero point 128.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from torch import fx, nn

from gdrq_bench.config.errors import ExportError
from gdrq_bench.export.levels import SIGNED_ZERO_POINT, InputGrid, quantize_input
from gdrq_bench.export.lower import Lowering, lower_model
from gdrq_bench.export.pool import lower_exact_mean, pool_grids
from gdrq_bench.quant.fold import FoldedLayer


class ExactFlavor:
    def __init__(self, graph: fx.GraphModule, input_shape: list[Any]) -> None:
        self.pools = pool_grids(graph, input_shape)  # each global average pool's, by node name

    def layer(self, lowering: Lowering, name: str, layer: FoldedLayer, x: str) -> str:
        b, grid = lowering.b, InputGrid.of(name, layer.input)
        levels, _, x_zero = quantize_input(b, x, grid, lowering.flattened)
        weight = layer.weight_int.detach().cpu().numpy().astype(np.int16) + SIGNED_ZERO_POINT
        w_zero = b.constant(f"{name}.w_zero_point", SIGNED_ZERO_POINT, "uint8")
        channels = weight.shape[0]
        if layer.conv_args is None:  # linear: x [N, K] @ W^T [K, M]
            w = b.constant(f"{name}.weight_u8", weight.T, "uint8")
            acc = b.node("MatMulInteger", [levels, w, x_zero, w_zero], f"{name}.acc")
            shape = [channels]
        else:
            w = b.constant(f"{name}.weight_u8", weight, "uint8")
            acc = b.node(
                "ConvInteger", [levels, w, x_zero, w_zero], f"{name}.acc", **conv_attributes(layer)
            )
            shape = [1, channels, 1, 1]
        acc = b.node("Cast", [acc], f"{name}.acc_float", to=onnx.TensorProto.FLOAT)
        scale = b.constant(f"{name}.M", _vector(layer.scale, shape), "float32")
        shift = b.constant(f"{name}.B", _vector(layer.shift, shape), "float32")
        return b.node("Add", [b.node("Mul", [acc, scale], f"{name}.scaled"), shift], name)

    def global_pool(self, lowering: Lowering, node: fx.Node, x: str) -> str:
        return lower_exact_mean(lowering.b, x, self.pools[node.name])

    def after(self, lowering: Lowering, node: fx.Node, value: str) -> str:
        return value


def conv_attributes(layer: FoldedLayer) -> dict[str, Any]:
    """ONNX Conv attributes of a folded conv's geometry."""
    args = layer.conv_args
    if isinstance(args["padding"], str):  # torchvision's models give explicit padding
        raise ExportError(f"a conv with padding={args['padding']!r} is not exported")
    padding = [int(p) for p in args["padding"]]
    return {
        "kernel_shape": list(layer.weight_int.shape[2:]),
        "strides": [int(s) for s in args["stride"]],
        "pads": padding + padding,
        "dilations": [int(d) for d in args["dilation"]],
        "group": int(args["groups"]),
    }


def export_exact(folded: nn.Module, input_shape: list[Any]) -> tuple[onnx.ModelProto, dict]:
    """The exact integer graph of an eval-mode folded model (float32, on any device), for
    inputs of `input_shape` (the batch dimension may be a name); also each folded layer's
    output tensor name, in execution order."""
    return lower_model(folded, lambda graph: ExactFlavor(graph, input_shape), input_shape)


def _vector(values: Any, shape: list[int]) -> np.ndarray:
    return values.detach().cpu().float().numpy().reshape(shape)
