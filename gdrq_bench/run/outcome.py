"""What the stages hand on: the float stage's model and the quantized stages' results, typed,
passed by the pipeline to the stages after them and to the report (the Run itself keeps only
what its own methods measure: the scores of evaluate, the times of train)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gdrq_bench.config.errors import GdrqError

LayerStats = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class FloatModel:
    model: nn.Module
    source: str  # where its weights came from: checkpoint, pretrained, cache or trained
    weights_hash: str  # of its weights: rows that share a float model share it


@dataclass(frozen=True)
class QuantizedResult:
    """The quantized stages' results; a float run (nothing to quantize) has the empty one."""

    layer_stats: dict[str, LayerStats] = field(default_factory=dict)  # layer_stats.json
    fold_err: float | None = None  # the fold check's max relative difference; None: no fold
    exported: dict[str, Any] = field(default_factory=dict)  # the export's row figures
    # a check after training that failed (fold, export): the row is written marked failed,
    # then the run ends with this error
    failure: GdrqError | None = None
