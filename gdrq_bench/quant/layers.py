"""Quantized conv and linear layers: quantize the input activation and the weight, then the
float op. They keep the original layer's parameters, so a converted model trains as before."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from gdrq_bench.quant.act_quant import ActQuantizer
from gdrq_bench.quant.weight_quant import WeightQuantizer


def conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """The constructor arguments that give another conv `conv`'s shape and arithmetic."""
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": conv.bias is not None,
        "padding_mode": conv.padding_mode,
    }


class QuantConv2d(nn.Conv2d):
    def __init__(
        self, conv: nn.Conv2d, weight_quantizer: WeightQuantizer, input_quantizer: ActQuantizer
    ) -> None:
        super().__init__(**conv_geometry(conv), device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.weight_quantizer, self.input_quantizer = weight_quantizer, input_quantizer

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_quantizer(self.weight)
        return self._conv_forward(self.input_quantizer(x), weight, self.bias)


class QuantLinear(nn.Linear):
    def __init__(
        self, linear: nn.Linear, weight_quantizer: WeightQuantizer, input_quantizer: ActQuantizer
    ) -> None:
        super().__init__(
            linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta"
        )
        self.weight, self.bias = linear.weight, linear.bias
        self.weight_quantizer, self.input_quantizer = weight_quantizer, input_quantizer

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


QUANT_LAYERS = (QuantConv2d, QuantLinear)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule called `name` (dotted, as named_modules gives it)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
