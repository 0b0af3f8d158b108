"""The exact graph's global average pool: a mean whose bits do not depend on the order of its
sum, so onnxruntime and torch agree on every CPU.

A float32 sum's last bit depends on the order its terms are added in, and that order is the
kernel's: its vector width, its threads, its library build. Here each term is first rounded to
a grid `unit` (a power of two 2^-24 of the step of the quantizer that reads the pool) after a
clip to +-`bound`, in float64: exact operations, term by term. The rounded terms are integers
times `unit` whose sum stays below 2^53 units, so float64 adds them exactly in any order. One
division by the plane's size (in units) and one cast to float32 follow, both correctly rounded
by IEEE 754 on every machine. The grid moves a mean by at most 2^-25 of the reader's step (a
float32 mean's own rounding is of that order); the clip touches only terms over 2^28 / (H W)
reader steps (4 million on an 8x8 plane), which that quantizer saturates anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, fx
from torch.fx.passes.shape_prop import ShapeProp

from gdrq_bench.config.errors import ExportError
from gdrq_bench.export.builder import GraphBuilder
from gdrq_bench.export.levels import InputGrid
from gdrq_bench.export.lower import FLATTENS, PASS_THROUGH, is_global_pool
from gdrq_bench.quant.fold import FoldedLayer

FLOAT64_EXACT_BITS = 53  # integers up to 2^53 are exact in float64
UNITS_PER_READER_STEP_BITS = 24  # unit = 2^(floor(log2 step) - 24)


@dataclass(frozen=True)
class PoolGrid:
    """The float64 grid a pool's terms are rounded to: `unit` (a power of two), `bound` (the
    clip, a whole number of units) and `divisor` (the plane's size in units: mean = sum of
    units / divisor)."""

    unit: float
    bound: float
    divisor: float

    @classmethod
    def of(cls, reader_step: float, plane: int) -> PoolGrid:
        """The grid of a pool over `plane` elements read by a quantizer of step
        `reader_step`: every partial sum of `plane` clipped terms stays under 2^53 units."""
        _, exponent = math.frexp(reader_step)  # step = m 2^exponent, 0.5 <= m < 1
        unit = math.ldexp(1.0, exponent - 1 - UNITS_PER_READER_STEP_BITS)
        bound = unit * (2**FLOAT64_EXACT_BITS // plane)
        return cls(unit, bound, plane / unit)


def exact_mean(x: Tensor, grid: PoolGrid) -> Tensor:
    """The mean of each H x W plane of float32 `x` on `grid` (module docstring); (N, C, 1, 1),
    float32."""
    units = torch.round(x.double().clamp(-grid.bound, grid.bound) / grid.unit)
    return (units.sum(dim=(2, 3), keepdim=True) / grid.divisor).float()


def lower_exact_mean(b: GraphBuilder, x: str, grid: PoolGrid) -> str:
    """The ONNX ops of exact_mean, the same IEEE operations in the same order."""
    low, high, unit, divisor = (
        b.constant(hint, value, "float64")
        for hint, value in (
            ("pool_low", -grid.bound),
            ("pool_high", grid.bound),
            ("pool_unit", grid.unit),
            ("pool_divisor", grid.divisor),
        )
    )
    wide = b.node("Cast", [x], "pool_float64", to=onnx.TensorProto.DOUBLE)
    clipped = b.node("Clip", [wide, low, high], "pool_clipped")
    units = b.node("Round", [b.node("Div", [clipped, unit], "pool_scaled")], "pool_units")
    axes = b.constant("pool_axes", np.array([2, 3]), "int64")
    total = b.node("ReduceSum", [units, axes], "pool_sum", keepdims=1)
    mean = b.node("Div", [total, divisor], "pool_mean")
    return b.node("Cast", [mean], "pool", to=onnx.TensorProto.FLOAT)


def pool_grids(graph: fx.GraphModule, input_shape: list[Any]) -> dict[str, PoolGrid]:
    """The grid of each global average pool of a traced folded model (by node name), for
    inputs of `input_shape` (its batch dimension may be a name)."""
    pools = [node for node in graph.graph.nodes if is_global_pool(graph, node)]
    if not pools:
        return {}
    sample = torch.zeros(1, *input_shape[1:])
    ShapeProp(graph).propagate(sample)
    grids = {}
    for node in pools:
        pooled = node.args[0].meta["tensor_meta"].shape
        grids[node.name] = PoolGrid.of(_reader_step(graph, node), pooled[2] * pooled[3])
    return grids


def _reader_step(graph: fx.GraphModule, pool: fx.Node) -> float:
    """The input step of the folded layer that reads `pool`'s output (through flatten,
    dropout or identity)."""
    node = pool
    while len(node.users) == 1:
        (node,) = node.users
        target = graph.get_submodule(node.target) if node.op == "call_module" else node.target
        if isinstance(target, FoldedLayer):
            return float(InputGrid.of(node.target, target.input).step)
        if not (isinstance(target, PASS_THROUGH) or target in FLATTENS):
            break
    where = pool.target if pool.op == "call_module" else pool.name
    raise ExportError(
        f"{where}: a global average pool is exported only when one quantized layer reads "
        "it (through flatten, dropout or identity)"
    )
