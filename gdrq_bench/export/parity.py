"""The exact graph's proof: onnxruntime's outputs equal the float32 folded model's, bit for
bit, on the fold-check batches; on a difference, the first folded layer whose output differs
is found by running both again with every layer's output exposed."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import onnx
import torch
from torch import Tensor, nn

from gdrq_bench.errors import ExportError
from gdrq_bench.export import runtime


class ParityError(ExportError):
    """The exact graph's outputs differ from the folded model's; names the first layer."""


def check_parity(
    folded: nn.Module,
    model: onnx.ModelProto,
    layer_outputs: dict[str, str],
    batches: Iterable[Tensor],
) -> float:
    """The largest absolute difference between the exact graph run by onnxruntime and the
    float32 folded model (run on the CPU) over `batches`: 0.0, or a ParityError naming the
    first folded layer, in execution order, whose output differs."""
    reference = copy.deepcopy(folded).float().cpu().eval()
    sess = runtime.session(model)
    for x in batches:
        with torch.no_grad():
            expected = reference(x.cpu().float())
        difference = (runtime.run(sess, x)[0] - expected).abs().max().item()
        if difference != 0.0:
            name, layer_difference = _first_difference(reference, model, layer_outputs, x)
            raise ParityError(
                f"exact ONNX graph differs from the float32 folded model: output max abs "
                f"difference {difference:.3g}; first differing layer {name} "
                f"(max abs difference {layer_difference:.3g})"
            )
    return 0.0


def _first_difference(
    reference: nn.Module, model: onnx.ModelProto, layer_outputs: dict[str, str], x: Tensor
) -> tuple[str, float]:
    """(name, max abs difference) of the first folded layer whose output differs on x."""
    captured: dict[str, Tensor] = {}
    hooks = [
        reference.get_submodule(name).register_forward_hook(
            lambda _, __, output, name=name: captured.__setitem__(name, output)
        )
        for name in layer_outputs
    ]
    with torch.no_grad():
        reference(x.cpu().float())
    for hook in hooks:
        hook.remove()
    exposed = copy.deepcopy(model)
    exposed.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(tensor) for tensor in layer_outputs.values()
    )
    outputs = runtime.run(runtime.session(exposed), x)[1:]
    for name, actual in zip(layer_outputs, outputs):
        difference = (actual - captured[name]).abs().max().item()
        if difference != 0.0:
            return name, difference
    return "(none: only the glue after the last layer)", 0.0
