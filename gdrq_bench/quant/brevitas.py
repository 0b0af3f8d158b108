"""method=brevitas: Brevitas' QAT layers (https://github.com/Xilinx/brevitas) in place of
gdrq_bench's, the outside baseline, built through the method hook (methods.py) and trained,
probed and reported by the same stages as every method. Needs the bench extra.

Every conv and linear that quantize_model would quantize quantizes its weights and its own
input at the spec's bits (the first and last layers at method.first_last_bits'), and
activation functions stay float, as in gdrq-run. An input that can be negative (a normalised
image, a residual sum, a linear bottleneck) gets a signed quantizer, one that cannot (after a
ReLU) an unsigned one, read off the first calibration batch as gdrq-run reads it off the first
batch.

Quantizers (Brevitas' stock ones): weights Int8WeightPerChannelFloat (a float scale per output
channel from max |w|, narrow signed range) at the layer's bits; inputs Uint8ActPerTensorFloat or
Int8ActPerTensorFloat (a per-tensor scale initialised from a percentile statistic over the
calibration batches, then learned) at the layer's activation bits. Brevitas keeps BatchNorm
apart (its deployment folds it at export), so the run has no fold stage.
"""

from __future__ import annotations

import copy

import torch
from brevitas import nn as qnn
from brevitas.graph.calibrate import calibration_mode
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
from torch import Tensor, nn

from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.convert import QuantScope, layer_plan
from gdrq_bench.quant.layers import conv_geometry
from gdrq_bench.quant.spec import QuantSpec


def _quant_layer(layer: nn.Conv2d | nn.Linear, bits: int) -> nn.Module:
    """A Brevitas layer with `layer`'s shape and weights, per-channel weight scales."""
    options = {"weight_quant": Int8WeightPerChannelFloat, "weight_bit_width": bits}
    if isinstance(layer, nn.Conv2d):
        new = qnn.QuantConv2d(**conv_geometry(layer), **options)
    else:
        bias = layer.bias is not None
        new = qnn.QuantLinear(layer.in_features, layer.out_features, bias=bias, **options)
    new.load_state_dict(layer.state_dict(), strict=False)  # strict: Brevitas adds scale buffers
    return new


@torch.no_grad()
def _inputs_can_be_negative(model: nn.Module, layers: list[str], example: Tensor) -> set[str]:
    """The layers whose input holds a negative value on `example` (model in eval mode)."""
    negative: set[str] = set()
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _, args, name=name: negative.add(name) if bool((args[0] < 0).any()) else None
        )
        for name in layers
    ]
    was_training = model.training
    model.eval()(example)
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return negative


def brevitas_model(
    model: nn.Module, spec: QuantSpec, scope: QuantScope, batches: list[Tensor]
) -> nn.Module:
    """method=brevitas's quantized model: a Brevitas copy of `model` (left untouched),
    quantized where quantize_model would quantize it (the layers of layer_plan, at
    spec.layer_bits), calibrated on `batches` (the model's inputs, on its device)."""
    qmodel = copy.deepcopy(model)
    plan = layer_plan(qmodel, spec, scope)
    signed = _inputs_can_be_negative(qmodel, [name for name, _ in plan], batches[0])
    for name, edge in plan:
        w_bits, a_bits = spec.layer_bits(edge)
        layer = qmodel.get_submodule(name)
        weights = layer if w_bits == FLOAT_BITS else _quant_layer(layer, w_bits)
        inputs = [] if a_bits == FLOAT_BITS else [_input_quantizer(a_bits, name in signed)]
        qmodel.set_submodule(name, nn.Sequential(*inputs, weights))
    qmodel = qmodel.to(batches[0].device)  # the new quantizers are made on the CPU
    _calibrate(qmodel, batches)
    return qmodel


def _input_quantizer(bits: int, signed: bool) -> nn.Module:
    act_quant = Int8ActPerTensorFloat if signed else Uint8ActPerTensorFloat
    return qnn.QuantIdentity(act_quant=act_quant, bit_width=bits)


@torch.no_grad()
def _calibrate(qmodel: nn.Module, batches: list[Tensor]) -> None:
    """Brevitas' calibration pass: activation scales start from statistics of `batches`
    (quantization off while they are collected), then become learned parameters."""
    was_training = qmodel.training
    qmodel.eval()
    with calibration_mode(qmodel):
        for images in batches:
            qmodel(images)
    qmodel.train(was_training)
