"""A Brevitas copy of a float model, quantized the way gdrq-run quantizes it, for the bench.

Brevitas (https://github.com/Xilinx/brevitas) is the outside baseline: its QAT layers with its
own quantizers. The copy follows gdrq-run's first/last-layer policy (method.first_last_bits=8):
the first and the last conv/linear get 8-bit weights and an 8-bit quantizer on their input;
every other conv/linear gets `w_bits` weights; every ReLU becomes a QuantReLU of `a_bits`
except the last one, whose output only reaches the head through its own 8-bit input quantizer
(in gdrq-run the head quantizes its pooled input at 8 bits and that ReLU's output is float).

Quantizers (Brevitas' stock ones): weights Int8WeightPerChannelFloat (a float scale per output
channel from max |w|, narrow signed range) at the layer's bits; activations
Uint8ActPerTensorFloat (QuantReLU's default: per-tensor scale learned from a percentile
statistic) at `a_bits`; the first layer's input, a normalised image, signed Int8ActPerTensorFloat.
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


def brevitas_copy(model: nn.Module, w_bits: int, a_bits: int) -> nn.Module:
    """A Brevitas-quantized copy of `model` (left untouched); see the module docstring."""
    qmodel = copy.deepcopy(model)
    layers = quantizable_layers(qmodel)
    edges = {layers[0][0], layers[-1][0]}
    for index, (name, layer) in enumerate(layers):
        new = _quant_layer(layer, EDGE_BITS if name in edges else w_bits)
        if name in edges:
            input_quant = Int8ActPerTensorFloat if index == 0 else Uint8ActPerTensorFloat
            new = nn.Sequential(qnn.QuantIdentity(act_quant=input_quant, bit_width=EDGE_BITS), new)
        qmodel.set_submodule(name, new)
    relus = [name for name, module in qmodel.named_modules() if type(module) is nn.ReLU]
    for name in relus[:-1]:
        qmodel.set_submodule(name, qnn.QuantReLU(bit_width=a_bits))
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
