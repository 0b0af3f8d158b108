"""The three states a quantizer can be in, switched together for a whole model."""

from __future__ import annotations

from torch import nn

FLOAT, CLIP, QUANT = "float", "clip", "quant"
MODES = (FLOAT, CLIP, QUANT)


class QuantizerBase(nn.Module):
    """A quantizer in mode `float` (identity), `clip` (Scale-Clip only, the reshape phase) or
    `quant` (clip and round)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.mode = QUANT


def set_mode(model: nn.Module, mode: str) -> nn.Module:
    """Put every quantizer of `model` into `mode`; returns the model."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown: use one of {MODES}")
    for module in model.modules():
        if isinstance(module, QuantizerBase):
            module.mode = mode
    return model
