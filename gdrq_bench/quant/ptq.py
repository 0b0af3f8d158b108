"""Post-training quantization of a converted model on calibration batches, in the order a
run applies it: activation ranges (act_ranges.py), then learned rounding of the weights
(adaround.py), then BN re-estimation, then bias correction (bias_correction.py). Each step
reads the model as the steps before left it; the BN layers keep the float model's running
statistics (eval mode throughout) unless they are re-estimated."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gdrq_bench.quant.act_ranges import SAMPLE_LIMIT, ActivationSample
from gdrq_bench.quant.adaround import AdaRoundSettings, learned_levels
from gdrq_bench.quant.bias_correction import OutputShift, subtract_shift
from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.convert import quantized_layers
from gdrq_bench.quant.fake_quant import level_range
from gdrq_bench.quant.fold import call_model
from gdrq_bench.quant.layers import QuantConv2d, QuantLinear
from gdrq_bench.quant.modes import FLOAT, QUANT, set_mode
from gdrq_bench.quant.weight_quant import GroupWeightQuantizer

log = logging.getLogger(__name__)

QuantLayer = QuantConv2d | QuantLinear


class CalibrationError(ValueError):
    """A calibration choice that the model's quantizers cannot take."""


@contextmanager
def _hooked(
    modules: list[nn.Module], hook: Callable[..., Any], pre: bool = False
) -> Iterator[None]:
    register = "register_forward_pre_hook" if pre else "register_forward_hook"
    handles = [getattr(module, register)(hook(module)) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _run(model: nn.Module, batches: list[Any]) -> None:
    model.eval()
    for batch in batches:
        call_model(model, batch)


def calibrate_activations(
    qmodel: nn.Module,
    batches: list[Any],
    rule: str,
    percentile: float,
    points: int,
    generator: torch.Generator,
) -> None:
    """Each activation quantizer's sign and clip from the float activations the layer sees
    on `batches` (the model's quantizers in float mode: no rounding upstream), by `rule`."""
    layers = [
        layer for _, layer in quantized_layers(qmodel) if layer.input_quantizer.bits != FLOAT_BITS
    ]
    per_batch = 0 if rule == "max" else max(SAMPLE_LIMIT // max(len(batches), 1), 1)
    samples = {id(layer): ActivationSample(per_batch, generator) for layer in layers}

    def record(layer: QuantLayer) -> Callable[..., None]:
        return lambda _module, inputs: samples[id(layer)].add(inputs[0])

    set_mode(qmodel, FLOAT)
    try:
        with _hooked(layers, record, pre=True):
            _run(qmodel, batches)
    finally:
        set_mode(qmodel, QUANT)
    for layer in layers:
        sample, quantizer = samples[id(layer)], layer.input_quantizer
        quantizer.calibrate(sample.clip(rule, quantizer.bits, percentile, points), sample.negative)


def _captured(
    model: nn.Module, module: nn.Module, batches: list[Any], output: bool
) -> list[Tensor]:
    """`module`'s input (or output) at each of its calls while `model` runs on `batches`."""
    seen: list[Tensor] = []

    def keep(_module: nn.Module) -> Callable[..., None]:
        if output:
            return lambda _m, _inputs, result: seen.append(result.detach())
        return lambda _m, inputs: seen.append(inputs[0].detach())

    with _hooked([module], keep, pre=not output):
        _run(model, batches)
    return seen


def _layer_op(layer: QuantLayer) -> Callable[[Tensor, Tensor], Tensor]:
    if isinstance(layer, QuantConv2d):
        return lambda x, weight: layer._conv_forward(x, weight, layer.bias)
    return lambda x, weight: F.linear(x, weight, layer.bias)


def check_adaround(qmodel: nn.Module) -> None:
    """Learned rounding writes each weight onto its group's grid: it needs group weight
    quantizers whose rounded tensor is the stored weight (no Scale-Clip left on)."""
    for name, layer in quantized_layers(qmodel):
        quantizer = layer.weight_quantizer
        plain = isinstance(quantizer, GroupWeightQuantizer) and (
            quantizer.scale_clip is None or not bool(quantizer.scale_clip.on)
        )
        if quantizer.bits != FLOAT_BITS and not plain:
            raise CalibrationError(
                f"trainer.calibrate.rounding=adaround: layer {name} rounds a transformed weight "
                f"({type(quantizer).__name__}); learned rounding needs group weight quantizers "
                "(gdrq, groups_only, minmax, lsq)"
            )


def adaround_model(
    qmodel: nn.Module,
    float_model: nn.Module,
    batches: list[Any],
    settings: AdaRoundSettings,
    generator: torch.Generator,
) -> None:
    """Learned rounding of every quantized weight, layer by layer in registration order: each
    layer's inputs come from the quantized model as the layers before it were rounded, its
    targets from the float model. Its clips are frozen and its weights written onto them."""
    check_adaround(qmodel)
    layers = [
        (name, layer)
        for name, layer in quantized_layers(qmodel)
        if layer.weight_quantizer.bits != FLOAT_BITS
    ]
    for index, (name, layer) in enumerate(layers, 1):
        quantizer = layer.weight_quantizer
        inputs = [layer.input_quantizer(x) for x in _captured(qmodel, layer, batches, False)]
        targets = _captured(float_model, float_model.get_submodule(name), batches, True)
        ints, step = quantizer.integer_weight(layer.weight)
        step = step.reshape(-1, *([1] * (layer.weight.dim() - 1)))
        with torch.enable_grad():
            levels = learned_levels(
                layer.weight,
                step,
                level_range(quantizer.bits, signed=True),
                _layer_op(layer),
                inputs,
                targets,
                settings,
                generator,
            )
        changed = float((levels != ints.to(levels.dtype)).float().mean())
        quantizer.freeze_clip(layer.weight)
        with torch.no_grad():
            layer.weight.copy_(levels * step)
        log.info(
            "adaround %d/%d %s: %.1f%% of weights round the other way",
            index,
            len(layers),
            name,
            100 * changed,
        )


@torch.no_grad()
def reestimate_batch_norms(qmodel: nn.Module, batches: list[Any]) -> int:
    """Replace each BatchNorm's running statistics (those that track them) by the average over
    `batches` of each batch's per-channel mean and unbiased variance of its inputs through the
    quantized model (torch's momentum=None; its quantizers at their calibrated clips): the
    statistics the deployed weights give, where the float model's no longer match them
    (per-tensor 4-bit weights rescale whole channels). Returns how many layers it set."""
    norms = [
        module
        for module in qmodel.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]
    momenta = [norm.momentum for norm in norms]
    qmodel.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    try:
        for batch in batches:
            call_model(qmodel, batch)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        qmodel.eval()
    return len(norms)


def correct_biases(qmodel: nn.Module, float_model: nn.Module, batches: list[Any]) -> None:
    """Take each quantized layer's mean output error on `batches` out of its bias. The
    shifts are measured in one pass, so a layer's is measured before those above it apply."""
    layers = quantized_layers(qmodel)
    shifts = {name: OutputShift() for name, _ in layers}
    weights = {name: float_model.get_submodule(name).weight.detach() for name, _ in layers}
    names = {id(layer): name for name, layer in layers}

    def measure(layer: QuantLayer) -> Callable[..., None]:
        name, op = names[id(layer)], _layer_op(layer)

        def hook(_module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            shifts[name].add(output, op(inputs[0], weights[name]))

        return hook

    with _hooked([layer for _, layer in layers], measure):
        _run(qmodel, batches)
    for name, layer in layers:
        subtract_shift(layer, shifts[name].mean)
