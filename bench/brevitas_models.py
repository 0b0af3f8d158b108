"""A Brevitas copy of a float model, quantized where gdrq-run quantizes it, for the bench.

Brevitas (https://github.com/Xilinx/brevitas) is the outside baseline: its QAT layers with its
own quantizers. As in gdrq-run, every conv and linear quantizes its weights and its own input,
and activation functions stay float; the first and the last layer follow gdrq-run's
method.first_last_bits=8 (8-bit weights and input), every other layer takes `w_bits` weights and
an `a_bits` input. An input that can be negative (a normalised image, a residual sum, a linear
bottleneck) gets a signed quantizer, one that cannot (after a ReLU) an unsigned one, read off an
example batch as gdrq-run reads it off the first batch.

Quantizers (Brevitas' stock ones): weights Int8WeightPerChannelFloat (a float scale per output
channel from max |w|, narrow signed range) at the layer's bits; inputs Uint8ActPerTensorFloat or
Int8ActPerTensorFloat (a per-tensor scale initialised from a percentile statistic, then
learned) at the layer's activation bits.
"""

from __future__ import annotations

import copy

import torch
from brevitas import nn as qnn
from brevitas.graph.calibrate import calibration_mode
from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
from torch import Tensor, nn

from gdrq_bench.quant.convert import quantizable_layers
from gdrq_bench.quant.layers import conv_geometry

EDGE_BITS = 8


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


def brevitas_copy(model: nn.Module, w_bits: int, a_bits: int, example: Tensor) -> nn.Module:
    """A Brevitas-quantized copy of `model` (left untouched); see the module docstring."""
    qmodel = copy.deepcopy(model)
    layers = quantizable_layers(qmodel)
    names = [name for name, _ in layers]
    edges = {names[0], names[-1]}
    signed = _inputs_can_be_negative(qmodel, names, example)
    for name, layer in layers:
        bits = EDGE_BITS if name in edges else a_bits
        input_quant = Int8ActPerTensorFloat if name in signed else Uint8ActPerTensorFloat
        quantized = _quant_layer(layer, EDGE_BITS if name in edges else w_bits)
        wrapped = nn.Sequential(qnn.QuantIdentity(act_quant=input_quant, bit_width=bits), quantized)
        qmodel.set_submodule(name, wrapped)
    return qmodel.to(next(model.parameters()).device)  # the new quantizers are made on the CPU


def calibrate(qmodel: nn.Module, batches: list[Tensor]) -> None:
    """Brevitas' calibration pass: activation scales start from statistics of `batches`
    (quantization off while they are collected), then become learned parameters."""
    was_training = qmodel.training
    qmodel.eval()
    with torch.no_grad(), calibration_mode(qmodel):
        for images in batches:
            qmodel(images)
    qmodel.train(was_training)
