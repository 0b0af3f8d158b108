"""Merge group steps into BatchNorm (docs/method.md section 5) and prove the merge exact.

A quantized conv with input step d_a, filter steps d_g(c) and a following BN becomes

    out_c = M_c * acc_c + B_c,  M_c = gamma_c d_g(c) d_a / sqrt(var_c + eps),
                                B_c = beta_c + gamma_c (bias_c - mu_c) / sqrt(var_c + eps)

where acc is the conv of the integer input with the int8 weights: one multiplier per channel,
whatever the number of groups.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from gdrq_bench.quant.act_quant import ActQuantizer
from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.fake_quant import integer_levels, quant_step
from gdrq_bench.quant.layers import QUANT_LAYERS, QuantConv2d, QuantLinear, replace_module
from gdrq_bench.quant.modes import QUANT

BATCH_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


class FoldedInput(nn.Module):
    """The eval-mode input quantizer, frozen. When it rounds, it outputs the integers and
    `step` (d_a) moves into the layer's multiplier; otherwise it applies the quantizer as is
    (a clip, or nothing) and `step` is 1."""

    def __init__(self, quantizer: ActQuantizer) -> None:
        super().__init__()
        self.rounds = quantizer.mode == QUANT and quantizer.bits != FLOAT_BITS
        self.quantizer = quantizer.eval()
        alpha = quantizer.frozen_alpha()
        self.register_buffer("alpha", alpha)
        if self.rounds:
            self.register_buffer("step", quant_step(alpha, quantizer.bits, quantizer.signed))
        else:
            self.register_buffer("step", torch.ones_like(alpha))

    def forward(self, x: Tensor) -> Tensor:
        if self.rounds:
            return integer_levels(x, self.quantizer.bits, self.alpha, self.quantizer.signed)
        return self.quantizer(x)


class FoldedLayer(nn.Module):
    """Integer conv or linear followed by one per-channel affine; float parts follow x's dtype."""

    def __init__(
        self,
        layer: QuantConv2d | QuantLinear,
        folded_input: FoldedInput,
        scale: Tensor,
        shift: Tensor,
        weight_int: Tensor,
    ) -> None:
        super().__init__()
        self.input = folded_input
        self.register_buffer("weight_int", weight_int)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        self.conv_args = (
            dict(
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
            if isinstance(layer, QuantConv2d)
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.affine(self.accumulate(self.input(x)))

    def accumulate(self, levels: Tensor) -> Tensor:
        """acc: the conv (or linear) of the input levels with the integer weights, in the
        levels' dtype."""
        weight = self.weight_int.to(levels.dtype)
        if self.conv_args is None:
            return F.linear(levels, weight)
        return F.conv2d(levels, weight, None, **self.conv_args)

    def affine(self, acc: Tensor) -> Tensor:
        """M_c acc_c + B_c, in acc's dtype: one multiply, then one add."""
        shape = (-1,) if self.conv_args is None else (-1, 1, 1)
        return acc * self.scale.to(acc.dtype).view(shape) + self.shift.to(acc.dtype).view(shape)

    def extra_repr(self) -> str:
        kind = "linear" if self.conv_args is None else f"conv2d {self.conv_args}"
        return f"{kind}, weight_int={tuple(self.weight_int.shape)}"


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """(gamma / sqrt(var + eps), mu, beta) of an eval-mode BatchNorm."""
    if getattr(bn, "running_var", None) is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    ones = torch.ones_like(bn.running_var)
    gamma = bn.weight if bn.weight is not None else ones
    beta = bn.bias if bn.bias is not None else torch.zeros_like(ones)
    inv_std = gamma / torch.sqrt(bn.running_var + bn.eps)
    return inv_std.detach(), bn.running_mean.detach(), beta.detach()


@torch.no_grad()
def fold_layer(layer: QuantConv2d | QuantLinear, bn: nn.Module | None) -> FoldedLayer:
    """The folded form of one quantized layer and the BN after it (None: no BN)."""
    weight_int, weight_step = layer.weight_quantizer.integer_weight(layer.weight)
    folded_input = FoldedInput(layer.input_quantizer)
    input_step = folded_input.step.to(weight_step.dtype)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(weight_step)
    scale, shift = weight_step * input_step, bias
    if bn is not None:
        inv_std, mean, beta = _bn_affine(bn)
        scale, shift = inv_std * scale, beta + inv_std * (bias - mean)
    return FoldedLayer(layer, folded_input, scale, shift, weight_int)


def _is_folded(layer: nn.Module) -> bool:
    quantizer = getattr(layer, "weight_quantizer", None)
    return quantizer is not None and quantizer.mode == QUANT and quantizer.bits != FLOAT_BITS


def _atomic_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order, a quantized layer counting as one leaf."""
    children = list(module.named_children())
    if not children or isinstance(module, QUANT_LAYERS):
        return [(prefix, module)]
    return [
        item
        for name, child in children
        for item in _atomic_modules(child, f"{prefix}.{name}" if prefix else name)
    ]


@torch.no_grad()
def fold_model(qmodel: nn.Module) -> nn.Module:
    """An eval-mode copy of `qmodel` with every weight-quantized layer folded.

    The BN merged into a layer is the leaf registered right after it, when that is a
    BatchNorm2d or FrozenBatchNorm2d of matching width (how torchvision builds conv+BN); it
    becomes Identity. A layer without such a BN keeps its steps as a per-channel output scale.
    """
    folded = copy.deepcopy(qmodel).eval()
    leaves = _atomic_modules(folded)
    found = False
    for (name, layer), (next_name, after) in zip(leaves, [*leaves[1:], ("", None)]):
        if not _is_folded(layer):
            continue
        bn = after if isinstance(after, BATCH_NORMS) else None
        stats = bn.running_mean if bn is not None else None
        if stats is not None and stats.numel() != layer.weight.shape[0]:
            bn = None
        replace_module(folded, name, fold_layer(layer, bn))
        if bn is not None:
            replace_module(folded, next_name, nn.Identity())
        found = True
    if not found:
        raise ValueError("the model has no layer with quantized weights in 'quant' mode to fold")
    return folded


def move_batch(value: Any, device: torch.device, float64: bool = False) -> Any:
    """Every tensor of a batch (a tensor, or nested lists, tuples and dicts) on `device`;
    floating ones in float64 if asked."""
    if isinstance(value, Tensor):
        value = value.to(device)
        return value.double() if float64 and value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(move_batch(item, device, float64) for item in value)
    if isinstance(value, dict):
        return {key: move_batch(item, device, float64) for key, item in value.items()}
    return value


def _tensors(value: Any) -> list[Tensor]:
    """Every floating tensor in a model output (a tensor, or nested lists, tuples and dicts)."""
    if isinstance(value, Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def call_model(model: nn.Module, batch: Any) -> Any:
    """model(batch), a tuple unpacked into arguments."""
    return model(*batch) if isinstance(batch, tuple) else model(batch)


def _difference(expected: Tensor, actual: Tensor) -> tuple[float, float]:
    """The largest absolute difference of two outputs, and that over the largest |expected|."""
    difference = (actual - expected).abs().max().item()
    return difference, difference / max(expected.abs().max().item(), 1e-30)


@torch.no_grad()
def verify_fold(
    qmodel: nn.Module, folded: nn.Module | None, batches: Iterable[Any]
) -> dict[str, float]:
    """Prove the BN merge on real batches, in float64 (docs/method.md section 5 says why).

    A float64 copy of `qmodel` is folded and both run in eval mode on each batch (a tuple is
    unpacked into arguments). Returns the largest absolute difference over every output
    element, `max_rel` (that difference over the largest |output| of the same tensor), and,
    when `folded` is given, `weight_mismatch`: how many of its integer weights differ from
    the float64 fold's (a float32 fold of the same model differs in the few weights that sit
    within float32 rounding of a grid boundary; another model differs in most).
    """
    reference = copy.deepcopy(qmodel).double().eval()
    folded64 = fold_model(reference)
    device = next(reference.parameters()).device
    max_abs = max_rel = 0.0
    for batch in batches:
        batch64 = move_batch(batch, device, float64=True)
        pairs = zip(
            _tensors(call_model(reference, batch64)),
            _tensors(call_model(folded64, batch64)),
            strict=True,
        )
        for expected, actual in pairs:
            if expected.numel() == 0:
                continue
            difference, relative = _difference(expected, actual)
            max_abs, max_rel = max(max_abs, difference), max(max_rel, relative)
    result = {"max_abs": max_abs, "max_rel": max_rel}
    if folded is not None:
        mine = dict(folded.named_buffers())
        result["weight_mismatch"] = float(
            sum(
                int((mine[name].to(torch.int16) != ints.to(torch.int16)).sum())
                for name, ints in folded64.named_buffers()
                if name.endswith("weight_int")
            )
        )
    return result


def _compared_outputs(reference: nn.Module, folded: nn.Module) -> dict[str, str]:
    """Per folded layer (its name), the module whose output equals the folded layer's in
    both models: the BatchNorm merged into it (an Identity in the folded model), else the
    layer itself."""
    leaves = _atomic_modules(reference)
    compared = {}
    for (name, _), (next_name, _) in zip(leaves, [*leaves[1:], ("", None)]):
        if not isinstance(folded.get_submodule(name), FoldedLayer):
            continue
        merged = next_name and isinstance(folded.get_submodule(next_name), nn.Identity)
        compared[name] = next_name if merged else name
    return compared


@torch.no_grad()
def first_differing_layer(
    qmodel: nn.Module, batch: Any, tolerance: float
) -> tuple[str, float] | None:
    """The first folded layer, in the order the batch runs through them, whose output differs
    from the quantized model's by more than `tolerance` relative to that output's largest
    magnitude (float64, as verify_fold), with its difference; None if every layer holds."""
    reference = copy.deepcopy(qmodel).double().eval()
    folded = fold_model(reference)
    compared = _compared_outputs(reference, folded)
    outputs: dict[str, dict[str, Tensor]] = {"reference": {}, "folded": {}}
    hooks = []
    for layer, watched in compared.items():
        for model, key in ((reference, "reference"), (folded, "folded")):
            module = model.get_submodule(watched)

            def keep(_module: nn.Module, _inputs: Any, output: Tensor, key=key, layer=layer):
                outputs[key][layer] = output.clone()  # before an in-place ReLU changes it

            hooks.append(module.register_forward_hook(keep))
    try:
        batch64 = move_batch(batch, next(reference.parameters()).device, float64=True)
        call_model(reference, batch64)
        call_model(folded, batch64)
    finally:
        for hook in hooks:
            hook.remove()
    for layer, actual in outputs["folded"].items():  # in the order the layers ran
        _, relative = _difference(outputs["reference"][layer], actual)
        if relative > tolerance:
            return layer, relative
    return None
