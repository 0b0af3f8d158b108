"""The folded model as a torch.fx graph whose nodes the exporters lower one by one: folded
layers stay whole (leaves), everything else is the float glue between them (ReLU, residual
adds, pooling, flatten)."""

from __future__ import annotations

from torch import fx, nn

from gdrq_bench.config.errors import ExportError
from gdrq_bench.quant.fold import FoldedLayer


class _FoldedTracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, FoldedLayer) or super().is_leaf_module(module, qualified_name)


def trace_folded(folded: nn.Module) -> fx.GraphModule:
    """fx graph of an eval-mode folded model; an untraceable model is an ExportError."""
    try:
        graph = _FoldedTracer().trace(folded)
    except Exception as error:  # fx raises many kinds on data-dependent control flow
        raise ExportError(
            f"the folded {type(folded).__name__} cannot be traced by torch.fx for export: "
            f"{str(error).splitlines()[0]}"
        ) from None
    return fx.GraphModule(folded, graph)
