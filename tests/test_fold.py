"""Merging group steps into BatchNorm (docs/method.md section 5): exact in float64, int8 weights."""

import copy
from collections import OrderedDict
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models
from torchvision.ops.misc import FrozenBatchNorm2d

from gdrq_bench.quant import (
    CLIP,
    QuantSpec,
    first_differing_layer,
    fold_model,
    own_methods,
    quantize_model,
    quantized_layers,
    set_mode,
    verify_fold,
)
from gdrq_bench.quant.fold import FoldedLayer

MAX_REL = 1e-6
BATCH, SIZE = 2, 32


# Fold exactness does not depend on how fine the alpha search is; 16 candidates keep it cheap.
SEARCH_POINTS = 16
BUILDERS = {
    "resnet18": models.resnet18,
    "mobilenet_v2": models.mobilenet_v2,
    "vgg16_bn": models.vgg16_bn,
}
GRID = [(bits, groups) for bits in (2, 4, 8) for groups in (1, 4, "per_channel")]
VGG_GRID = [(2, "per_channel"), (8, 1)]
# vgg16_bn's 25088x4096 linear (no BN after it) holds 3/4 of its weights and costs ~35 s per
# quantize + float64 verify on 2 cores, and each copy of the model ~5 s: two cases (2 and 8
# bits, per-channel and one group) leave it float, and one case (the default W4A4, 4 groups)
# quantizes all of vgg16_bn. The resnet18 and mobilenet_v2 cases cover the whole grid.
CASES = [
    *[(name, bits, groups, ()) for name in ("resnet18", "mobilenet_v2") for bits, groups in GRID],
    *[("vgg16_bn", bits, groups, ("classifier.0",)) for bits, groups in VGG_GRID],
    ("vgg16_bn", 4, 4, ()),
]


def _case_id(case: tuple) -> str:
    name, bits, groups, skip = case
    return "-".join([name, f"w{bits}", f"g{groups}", *[f"{layer}-float" for layer in skip]])


@cache
def _float_model(name: str) -> nn.Module:
    """Random init; BN keeps a cumulative average, so a few batches give sane eval statistics."""
    torch.manual_seed(0)
    model = BUILDERS[name](num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    return model


def _images(seed: int) -> torch.Tensor:
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@dataclass
class Case:
    qmodel: nn.Module
    folded: nn.Module
    bits: dict[str, int]  # weight bits of each quantized layer, by name
    batch: torch.Tensor
    report: dict[str, float]


@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def case(request) -> Case:
    name, bits, groups, skip = request.param
    spec = QuantSpec(
        w_bits=bits, a_bits=bits, groups=groups, skip=list(skip), search_points=SEARCH_POINTS
    )
    qmodel = quantize_model(_float_model(name), spec).train()
    with torch.no_grad():
        for seed in range(2):
            qmodel(_images(seed))
    bits_by_layer = {layer: q.weight_quantizer.bits for layer, q in quantized_layers(qmodel)}
    folded = fold_model(qmodel)
    batch = _images(10)
    return Case(qmodel.eval(), folded, bits_by_layer, batch, verify_fold(qmodel, folded, [batch]))


def test_the_case_folds_exactly_into_int8_layers_without_batchnorm(case):
    """All of a case's checks in one test, so that the case is built once, on one worker:
    the fold is exact in float64 on a batch whose reference output is not degenerate; each
    quantized layer folds to int8 levels on its own grid, reaching its top (the searched clip
    is at most max|W_g|); the first and last layers are 8-bit; no BatchNorm is left; the
    folded model runs in float64."""
    assert case.report["max_rel"] <= MAX_REL
    with torch.no_grad():
        out = case.qmodel(case.batch)
    assert out.abs().max() > 0 and not torch.equal(out[0], out[1]), "a degenerate reference"

    folded = {name: m for name, m in case.folded.named_modules() if isinstance(m, FoldedLayer)}
    assert folded.keys() == case.bits.keys()
    for name, layer in folded.items():
        assert layer.weight_int.dtype == torch.int8, name
        assert layer.weight_int.abs().max().item() == 2 ** (case.bits[name] - 1) - 1, name
    bits = list(case.bits.values())
    assert bits[0] == bits[-1] == 8
    assert not any(isinstance(m, nn.BatchNorm2d) for m in case.folded.modules())

    folded64 = copy.deepcopy(case.folded).double()
    with torch.no_grad():
        out = folded64(case.batch.double())
    assert out.dtype == torch.float64
    assert torch.isfinite(out).all() and out.abs().max() > 0
    layers = [m for m in folded64.modules() if isinstance(m, FoldedLayer)]
    assert layers and all(layer.weight_int.dtype == torch.int8 for layer in layers)


# Small hand-built models: a conv without BN, FrozenBatchNorm2d, a depthwise conv.


def _prepared(model: nn.Module, spec: QuantSpec) -> nn.Module:
    qmodel = quantize_model(model, spec).train()
    with torch.no_grad():
        for seed in range(3):
            qmodel(torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(seed)))
    return qmodel


def _frozen_bn(channels: int, seed: int) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(channels, eps=1e-3)
    generator = torch.Generator().manual_seed(seed)
    bn.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
    bn.bias.copy_(torch.randn(channels, generator=generator))
    bn.running_mean.copy_(torch.randn(channels, generator=generator))
    bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return bn


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().double().numpy()


def _expected_affine(layer: nn.Module, bn: nn.Module | None) -> tuple[np.ndarray, np.ndarray]:
    """M_c = gamma_c d_g(c) d_a / sqrt(var_c + eps), B_c = beta_c + gamma_c (b_c - mu_c) / ..."""
    weights, inputs = layer.weight_quantizer, layer.input_quantizer
    weight_step = _numpy(weights.clip.group_alpha[weights.group_of]) / (2 ** (weights.bits - 1) - 1)
    input_alpha = inputs.scale * inputs.running_stat.item()  # k_a * EMA(mean|a|)
    input_step = input_alpha / (2 ** (inputs.bits - 1) - 1 if inputs.signed else 2**inputs.bits - 1)
    bias = _numpy(layer.bias) if layer.bias is not None else np.zeros_like(weight_step)
    scale = weight_step * input_step
    if bn is None:
        return scale, bias
    inv_std = _numpy(bn.weight) / np.sqrt(_numpy(bn.running_var) + bn.eps)
    return inv_std * scale, _numpy(bn.bias) + inv_std * (bias - _numpy(bn.running_mean))


def _check_fold(qmodel: nn.Module, pairs: dict[str, str | None]) -> nn.Module:
    """verify_fold, and each folded layer's affine against the formula; pairs: layer -> its BN."""
    batch = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(9))
    assert verify_fold(qmodel, None, [batch])["max_rel"] <= MAX_REL
    folded = fold_model(qmodel)
    for layer_name, bn_name in pairs.items():
        layer = qmodel.get_submodule(layer_name)
        bn = qmodel.get_submodule(bn_name) if bn_name else None
        scale, shift = _expected_affine(layer, bn)
        merged = folded.get_submodule(layer_name)
        np.testing.assert_allclose(merged.scale.double().numpy(), scale, rtol=1e-5)
        np.testing.assert_allclose(merged.shift.double().numpy(), shift, rtol=1e-5, atol=1e-6)
        if bn_name:
            assert isinstance(folded.get_submodule(bn_name), nn.Identity)
    return folded


@pytest.mark.parametrize("groups", [1, 4, "per_channel"])
def test_conv_without_bn_keeps_a_per_channel_output_scale(groups):
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 8, 3, padding=1),
            relu=nn.ReLU(),
            body=nn.Conv2d(8, 12, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(12, 5),
        )
    )
    qmodel = _prepared(
        model, QuantSpec(w_bits=3, a_bits=3, groups=groups, first_last_bits="same", alpha="search")
    )
    _check_fold(qmodel, {"stem": None, "body": None, "head": None})


@pytest.mark.parametrize("bias", [False, True])
def test_frozen_batchnorm_is_merged(bias):
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 8, 3, padding=1, bias=bias),
            bn=_frozen_bn(8, 0),
            relu=nn.ReLU(),
            body=nn.Conv2d(8, 8, 3, padding=1, bias=bias),
            bn2=_frozen_bn(8, 1),
            relu2=nn.ReLU(),
            flat=nn.Flatten(),
            head=nn.Linear(8 * 12 * 12, 5),
        )
    )
    qmodel = _prepared(
        model, QuantSpec(w_bits=4, a_bits=4, groups=4, first_last_bits="same", alpha="search")
    )
    _check_fold(qmodel, {"stem": "bn", "body": "bn2", "head": None})


@pytest.mark.parametrize("groups", [1, 4, "per_channel"])
def test_depthwise_conv_is_folded(groups):
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 16, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(16),
            relu=nn.ReLU(),
            depthwise=nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            bn2=nn.BatchNorm2d(16, eps=1e-2),
            relu2=nn.ReLU(),
            pointwise=nn.Conv2d(16, 8, 1, bias=False),
            bn3=nn.BatchNorm2d(8),
            flat=nn.Flatten(),
            head=nn.Linear(8 * 12 * 12, 5),
        )
    )
    qmodel = _prepared(
        model, QuantSpec(w_bits=4, a_bits=4, groups=groups, first_last_bits="same", alpha="search")
    )
    folded = _check_fold(qmodel, {"stem": "bn", "depthwise": "bn2", "pointwise": "bn3"})
    assert folded.depthwise.conv_args["groups"] == 16
    assert tuple(folded.depthwise.weight_int.shape) == (16, 1, 3, 3)


def _small_bn_model(**bn_options) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, **bn_options),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8, **bn_options),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 12 * 12, 4),
    )


@pytest.mark.parametrize(
    "spec",
    [
        *[QuantSpec(method=method, groups=2) for method in sorted(own_methods())],
        QuantSpec(alpha="scale_clip", groups=4),
        QuantSpec(alpha="learned", groups=4, group_strategy="kmeans"),
        QuantSpec(group_strategy="contiguous", groups="per_channel", w_bits=2, a_bits=2),
        QuantSpec(a_bits=32),
    ],
    ids=lambda spec: f"{spec.method}-{spec.alpha}-{spec.group_strategy}-a{spec.a_bits}",
)
def test_every_method_folds_exactly(spec):
    qmodel = _prepared(_small_bn_model(), replace(spec, first_last_bits="same"))
    batch = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(9))
    assert verify_fold(qmodel, None, [batch])["max_rel"] <= MAX_REL


def test_batchnorm_without_running_statistics_cannot_be_folded():
    qmodel = _prepared(
        _small_bn_model(track_running_stats=False), QuantSpec(groups=2, alpha="search")
    )
    with pytest.raises(ValueError, match="without running statistics"):
        fold_model(qmodel)


def test_a_model_without_rounded_weights_cannot_be_folded():
    qmodel = set_mode(_prepared(_small_bn_model(), QuantSpec(groups=2, alpha="search")), CLIP)
    with pytest.raises(ValueError, match="no layer with quantized weights"):
        fold_model(qmodel)


def _break_layer_scale(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...]) -> None:
    """Fold the layer whose weights have `shape` with its multiplier 0.1% off."""
    import gdrq_bench.quant.fold as fold

    original = fold.fold_layer

    def broken(layer, bn):
        folded = original(layer, bn)
        if tuple(layer.weight.shape) == shape:
            folded.scale.mul_(1.001)
        return folded

    monkeypatch.setattr(fold, "fold_layer", broken)


def test_a_broken_fold_is_found_at_its_first_differing_layer(monkeypatch) -> None:
    """first_differing_layer names the layer whose fold is broken, not the layers after it
    that inherit its difference, and finds none in an intact fold."""
    spec = QuantSpec(w_bits=4, a_bits=4, groups=4, search_points=SEARCH_POINTS)
    qmodel = quantize_model(_float_model("resnet18"), spec).train()
    with torch.no_grad():
        for seed in range(2):
            qmodel(_images(seed))
    qmodel.eval()
    batch = _images(10)
    assert first_differing_layer(qmodel, batch, MAX_REL) is None
    _break_layer_scale(monkeypatch, (128, 64, 3, 3))  # resnet18's layer2.0.conv1
    layer, difference = first_differing_layer(qmodel, batch, MAX_REL)
    assert layer == "layer2.0.conv1"
    assert 1e-4 < difference < 1e-2  # the 0.1% multiplier, where the BN output is largest
    assert verify_fold(qmodel, None, [batch])["max_rel"] > MAX_REL
