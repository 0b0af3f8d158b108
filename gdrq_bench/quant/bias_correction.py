"""Empirical bias correction (Nagel et al., 2019): the mean error that quantization adds to
each output channel of a layer, measured on calibration inputs and taken out of its bias.

For the layer's input x (what the quantized network feeds it), the shift of channel c is
E[(W_q * Q(x))_c - (W * x)_c]: the quantized layer on its quantized input against the float
weights on the same input, averaged over images and positions. For a linear layer that is
W_q E[Q(x)] - W E[x]. The layer's bias (a new one where it has none: BN, folded later, keeps
the output's scale) becomes b - shift.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OutputShift:
    """The running mean, per output channel (dimension 1), of quantized minus float output."""

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0

    def add(self, quantized: Tensor, reference: Tensor) -> None:
        difference = (quantized.detach() - reference.detach()).double()
        channels = difference.transpose(0, 1).reshape(difference.shape[1], -1)
        total = channels.sum(dim=1)
        self.total = total if self.total is None else self.total + total
        self.count += channels.shape[1]

    @property
    def mean(self) -> Tensor:
        if self.total is None:
            raise ValueError("no output was recorded")
        return self.total / self.count


@torch.no_grad()
def subtract_shift(layer: nn.Conv2d | nn.Linear, shift: Tensor) -> None:
    """bias := bias - shift (a bias of -shift where the layer has none)."""
    shift = shift.to(layer.weight.dtype).to(layer.weight.device)
    if layer.bias is None:
        layer.bias = nn.Parameter(-shift)
    else:
        layer.bias.sub_(shift)
