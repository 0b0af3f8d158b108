"""A folded layer's input as uint8 integer levels, the start of both exported graphs.

The folded model rounds x / d_a to the levels lo..hi of the layer's grid (FoldedInput). ONNX
QuantizeLinear computes saturate(round(x / scale) + zero_point) on uint8, so the unsigned grid
takes zero point 0 and the signed grid zero point 128 (onnxruntime's x86 kernels fuse uint8
activations, not int8). The b-bit range is not implied by uint8's 0..255, so a Clip on the
uint8 tensor follows; clipping after rounding equals rounding after clipping, since the bounds
are integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdrq_bench.config.errors import ExportError
from gdrq_bench.export.builder import GraphBuilder
from gdrq_bench.quant import level_range
from gdrq_bench.quant.fold import FoldedInput

SIGNED_ZERO_POINT = 128


@dataclass(frozen=True)
class InputGrid:
    """A folded layer's input grid: the step d_a, the uint8 zero point and the level bounds."""

    step: np.float32
    zero_point: int
    low: int  # levels, before the zero point is added
    high: int
    bits: int

    @classmethod
    def of(cls, name: str, folded_input: FoldedInput) -> InputGrid:
        if not folded_input.rounds:
            raise ExportError(
                f"layer {name}: its input is not quantized (bits.a=32?); only integer inputs "
                "are exported"
            )
        if folded_input.step.numel() != 1:
            raise ExportError(f"layer {name}: only one activation step per tensor is exported")
        quantizer = folded_input.quantizer
        low, high = level_range(quantizer.bits, quantizer.signed)
        zero_point = SIGNED_ZERO_POINT if quantizer.signed else 0
        step = np.float32(folded_input.step.detach().cpu().float().item())
        return cls(step, zero_point, low, high, quantizer.bits)


def quantize_input(
    b: GraphBuilder, x: str, grid: InputGrid, flattened: dict[str, str]
) -> tuple[str, str, str]:
    """(uint8 levels + zero point, the scale's name, the zero point's name) of float tensor x.
    When x is a Flatten output, the quantizer acts before the Flatten and the uint8 tensor is
    flattened (onnxruntime fuses the last Gemm only when its DequantizeLinear follows Flatten)."""
    source = flattened.get(x, x)
    scale = b.constant("x_scale", grid.step, "float32")
    zero_point = b.constant("x_zero_point", grid.zero_point, "uint8")
    levels = b.node("QuantizeLinear", [source, scale, zero_point], "x_q")
    bounds = (grid.low + grid.zero_point, grid.high + grid.zero_point)
    if bounds != (0, 255):
        low, high = (b.constant("x_bound", bound, "uint8") for bound in bounds)
        levels = b.node("Clip", [levels, low, high], "x_levels")
    if source != x:
        levels = b.node("Flatten", [levels], "x_levels_flat", axis=1)
    return levels, scale, zero_point
