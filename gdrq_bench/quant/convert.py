"""Swap a model's convs and linears for quantized layers, under the first/last-layer policy."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from fnmatch import fnmatch

from torch import nn

from gdrq_bench.quant.choices import FLOAT_BITS, PER_CHANNEL, SpecError
from gdrq_bench.quant.layers import QUANT_LAYERS, QuantConv2d, QuantLinear, replace_module
from gdrq_bench.quant.methods import edge_method, get_method
from gdrq_bench.quant.spec import QuantSpec

# Exact types: subclasses such as attention's out-projection are used through their weights.
CONVERTIBLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class QuantScope:
    """Which part of a model a task quantizes, and which layers make its predictions.

    include: module-name prefixes to quantize (None: the whole model). outputs: fnmatch
    patterns of the prediction layers, which join the first layer at spec.first_last_bits
    (empty: the last convertible layer, as in a classifier). A detector has several.
    """

    include: tuple[str, ...] | None = None
    outputs: tuple[str, ...] = ()

    def covers(self, name: str) -> bool:
        return self.include is None or any(
            name == prefix or name.startswith(prefix + ".") for prefix in self.include
        )

    def edges(self, names: list[str]) -> set[str]:
        """The layers at first/last bits among `names` (in registration order)."""
        if not self.outputs:
            return {names[0], names[-1]}
        return {names[0], *(n for n in names if any(fnmatch(n, p) for p in self.outputs))}


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every plain conv and linear, in registration order."""
    return [(name, module) for name, module in model.named_modules() if type(module) in CONVERTIBLE]


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    """(name, module) of every quantized layer of a converted model."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def commit_scale_clip(model: nn.Module) -> nn.Module:
    """Write every layer's Scale-Clip into its weights and turn it off (the end of the reshape
    stage when Scale-Clip does not go on into QAT); returns the model."""
    for _, layer in quantized_layers(model):
        layer.weight_quantizer.commit_scale_clip(layer.weight)
    return model


def _check_groups(spec: QuantSpec, layers: list[tuple[str, nn.Module]]) -> None:
    """More groups than a layer has filters is a mistake, except in the first and the
    prediction layers (a detector's 3-anchor objectness conv), which get one per filter."""
    if spec.groups == PER_CHANNEL:
        return
    for name, layer in layers:
        filters = layer.weight.shape[0]
        if int(spec.groups) > filters:
            raise SpecError(
                "groups",
                spec.groups,
                f" is more than the {filters} filters of layer {name}; "
                f"use at most {min(lay.weight.shape[0] for _, lay in layers)} or per_channel",
            )


def layer_plan(
    model: nn.Module, spec: QuantSpec, scope: QuantScope | None = None
) -> list[tuple[str, bool]]:
    """(name, is an edge layer) of each layer `quantize_model` converts, checked against the
    spec (the method exists; groups fit the layers; skip leaves a layer) without copying
    the model: a run checks its spec against the model's layers before training."""
    scope = scope or QuantScope()
    method = get_method(spec.method)
    layers = [
        (name, layer)
        for name, layer in quantizable_layers(model)
        if scope.covers(name) and not any(fnmatch(name, pattern) for pattern in spec.skip)
    ]
    if not layers:
        raise SpecError(
            "skip", spec.skip, ": the model has no conv or linear layer left to quantize"
        )
    edges = scope.edges([name for name, _ in layers])
    if method.grouped:
        _check_groups(spec, [(name, layer) for name, layer in layers if name not in edges])
    return [(name, name in edges) for name, _ in layers]


def quantize_model(model: nn.Module, spec: QuantSpec, scope: QuantScope | None = None) -> nn.Module:
    """A quantized copy of `model` (left untouched), its quantizers in `quant` mode.

    Layers outside `scope` or matching a `spec.skip` pattern stay float. The first quantized
    layer in registration order and the scope's output layers (default: the last layer)
    follow `spec.first_last_bits`. A layer that Scale-Clip does not reshape at its bits
    (spec.scale_clips) takes the method's edge quantizers, as 8-bit first and last layers do.
    """
    plan = layer_plan(model, spec, scope)
    method = get_method(spec.method)
    if method.build is not None:
        raise SpecError("method", spec.method, " builds its own model (Method.build)")
    own_edge_bits = str(spec.first_last_bits) != "same"
    qmodel = copy.deepcopy(model)
    for name, edge in plan:
        w_bits, a_bits = spec.layer_bits(edge)
        if w_bits == FLOAT_BITS and a_bits == FLOAT_BITS:
            continue
        layer = qmodel.get_submodule(name)
        reshaped = spec.scale_clips(w_bits, a_bits)
        layer_method = (
            edge_method(spec.method) if (own_edge_bits and edge) or not reshaped else method
        )
        out_channels = layer.weight.shape[0]
        groups = spec.layer_groups(out_channels) if layer_method.grouped else 1
        weight_quantizer = layer_method.weight(spec, w_bits, out_channels, groups)
        wrapper = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        new = wrapper(layer, weight_quantizer, layer_method.act(spec, a_bits))
        new.train(layer.training)
        replace_module(qmodel, name, new.to(layer.weight.device))
    return qmodel
