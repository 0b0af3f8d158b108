"""quantize_model: a quantized copy under the first/last-layer policy and skip patterns."""

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gdrq_bench.quant import (
    CLIP,
    FLOAT,
    QUANT,
    QuantSpec,
    quantize_model,
    quantized_layers,
    set_mode,
)
from gdrq_bench.quant.layers import QuantConv2d, QuantLinear


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 8, 3, padding=1),
            bn=nn.BatchNorm2d(8),
            relu=nn.ReLU(),
            block=nn.Sequential(
                nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                nn.ReLU(),
            ),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(8, 4),
        )
    )


def _images() -> torch.Tensor:
    return torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(0))


def _bits(qmodel: nn.Module) -> dict[str, tuple[int, int]]:
    return {
        name: (layer.weight_quantizer.bits, layer.input_quantizer.bits)
        for name, layer in quantized_layers(qmodel)
    }


def test_float_model_is_left_untouched_even_by_training_the_copy():
    model = _model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    qmodel = quantize_model(model, QuantSpec()).train()
    optimizer = torch.optim.SGD(qmodel.parameters(), lr=0.1)
    F.cross_entropy(qmodel(_images()), torch.arange(4)).backward()
    optimizer.step()
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], value) for key, value in before.items())
    assert not any(isinstance(m, (QuantConv2d, QuantLinear)) for m in model.modules())


def test_first_and_last_layers_are_8_bit_by_default():
    assert _bits(quantize_model(_model(), QuantSpec(w_bits=2, a_bits=3))) == {
        "stem": (8, 8),
        "block.0": (2, 3),
        "block.2": (2, 3),
        "head": (8, 8),
    }


def test_fp_policy_leaves_first_and_last_layers_float():
    qmodel = quantize_model(_model(), QuantSpec(w_bits=2, a_bits=3, first_last_bits="fp"))
    assert type(qmodel.stem) is nn.Conv2d
    assert type(qmodel.head) is nn.Linear
    assert _bits(qmodel) == {"block.0": (2, 3), "block.2": (2, 3)}


def test_same_policy_uses_the_spec_bits():
    qmodel = quantize_model(_model(), QuantSpec(w_bits=2, a_bits=3, first_last_bits="same"))
    assert set(_bits(qmodel).values()) == {(2, 3)}
    assert len(_bits(qmodel)) == 4


def test_skip_patterns_keep_matching_layers_float():
    qmodel = quantize_model(_model(), QuantSpec(skip=["block.*"]))
    assert type(qmodel.block[0]) is nn.Conv2d
    assert type(qmodel.block[2]) is nn.Conv2d
    assert list(_bits(qmodel)) == ["stem", "head"]


def test_everything_skipped_is_an_error():
    with pytest.raises(ValueError, match="no conv or linear"):
        quantize_model(_model(), QuantSpec(skip=["*"]))


def test_float_mode_reproduces_the_float_model():
    """The quantized layers keep stride, padding, dilation, groups and bias."""
    model = _model().eval()
    qmodel = set_mode(quantize_model(model, QuantSpec()).eval(), FLOAT)
    with torch.no_grad():
        assert torch.equal(qmodel(_images()), model(_images()))


@pytest.mark.parametrize("mode", [FLOAT, CLIP, QUANT])
def test_set_mode_reaches_every_quantizer(mode):
    qmodel = set_mode(quantize_model(_model(), QuantSpec()), mode)
    for _, layer in quantized_layers(qmodel):
        assert layer.weight_quantizer.mode == layer.input_quantizer.mode == mode
