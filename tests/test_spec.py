"""QuantSpec validation: every bad argument raises a SpecError (a ValueError) that names it."""

from collections import OrderedDict

import pytest
from torch import nn

from gdrq_bench.quant import (
    QuantSpec,
    SpecError,
    get_method,
    quantize_model,
    quantized_layers,
    set_mode,
)

BAD_BITS = [0, 1, 9, 33]


@pytest.mark.parametrize("bits", BAD_BITS)
@pytest.mark.parametrize("field", ["w_bits", "a_bits"])
def test_bad_bits(field, bits):
    with pytest.raises(ValueError, match=f"^{field}={bits} "):
        QuantSpec(**{field: bits})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"groups": 0}, r"^groups=0 "),
        ({"groups": -2}, r"^groups=-2 "),
        ({"groups": "all"}, r"^groups='all' "),
        ({"group_strategy": "random"}, r"^group_strategy='random' "),
        ({"alpha": "magic"}, r"^alpha='magic' "),
        ({"weight_stat": "max"}, r"^weight_stat='max' "),
        ({"first_last_bits": 4}, r"^first_last_bits=4 "),
        ({"k_w": 0.0}, r"^k_w=0.0 "),
        ({"k_w": -2.0}, r"^k_w=-2.0 "),
        ({"k_a": 0}, r"^k_a=0 "),
        ({"act_momentum": 0.0}, r"^act_momentum=0.0 "),
        ({"search_points": 0}, r"^search_points=0 "),
        ({"clip_style": "squeeze"}, r"^clip_style='squeeze' "),
    ],
)
def test_bad_fields(fields, message):
    with pytest.raises(SpecError, match=message) as caught:
        QuantSpec(**fields)
    assert caught.value.field == next(iter(fields))


@pytest.mark.parametrize("groups", [1, 7, "per_channel"])
def test_good_spec_validates(groups):
    spec = QuantSpec(groups=groups, first_last_bits="fp", w_bits=2, a_bits=8)
    assert (spec.groups, spec.layer_bits(is_first_or_last=True)) == (groups, (32, 32))


def test_the_method_registry_names_an_unknown_method():
    with pytest.raises(SpecError, match=r"^method='ternary' is unknown: use one of \[") as caught:
        get_method("ternary")
    assert caught.value.field == "method"


def test_a_spec_error_is_reworded_for_another_name():
    with pytest.raises(SpecError) as caught:
        QuantSpec(k_a=0.0)
    assert caught.value.named("method.k_a") == "method.k_a=0.0 must be > 0"


def _narrow_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 8, 3),
            narrow=nn.Conv2d(8, 3, 3),
            head=nn.Conv2d(3, 10, 1),
        )
    )


def test_quantize_model_validates_the_spec():
    with pytest.raises(ValueError, match=r"^method='ternary'"):
        quantize_model(_narrow_model(), QuantSpec(method="ternary"))
    with pytest.raises(ValueError, match=r"^w_bits=1 "):
        quantize_model(_narrow_model(), QuantSpec(w_bits=1))


def test_more_groups_than_a_middle_layers_filters_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^groups=4 is more than the 3 filters of layer narrow"):
        quantize_model(_narrow_model(), QuantSpec(groups=4, first_last_bits="same"))


def test_a_prediction_layer_with_fewer_filters_than_groups_gets_one_per_filter():
    model = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 8, 3), head=nn.Conv2d(8, 3, 1)))
    qmodel = quantize_model(model, QuantSpec(groups=4, first_last_bits="same"))
    assert qmodel.head.weight_quantizer.groups == 3


def test_ungrouped_methods_ignore_the_group_count():
    """groups=4 exceeds the narrow layer's 3 filters, which a grouped method refuses; minmax
    quantizes every layer with one clip per tensor instead."""
    qmodel = quantize_model(_narrow_model(), QuantSpec(method="minmax", groups=4))
    assert {layer.weight_quantizer.groups for _, layer in quantized_layers(qmodel)} == {1}


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"^mode='round' "):
        set_mode(_narrow_model(), "round")
