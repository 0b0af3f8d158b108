"""In-process checks of building a run's QuantSpec from the config: one table (SPEC_KEYS)
gives each field its config key, the schema its type and default, and errors the key's name."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_dir
from torch import nn

from gdrq_bench.config import CONFIG_DIR, quote_numeric_choice
from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import SPEC_KEYS, BitsConfig, GroupingConfig, MethodConfig
from gdrq_bench.quant import QuantSpec, SpecError, layer_plan
from gdrq_bench.run.spec import build_spec, spec_error

SCHEMAS = {"bits": BitsConfig, "grouping": GroupingConfig, "method": MethodConfig}


def _config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[quote_numeric_choice(o) for o in overrides])


def test_every_spec_field_has_one_config_key() -> None:
    fields = [field.name for field in dataclasses.fields(QuantSpec)]
    assert sorted(SPEC_KEYS) == sorted(fields)
    assert len(set(SPEC_KEYS.values())) == len(SPEC_KEYS)


def test_the_schemas_take_quantspecs_defaults() -> None:
    spec = QuantSpec()
    for field, key in SPEC_KEYS.items():
        group, _, name = key.partition(".")
        assert getattr(SCHEMAS[group](), name) == getattr(spec, field), key


def test_the_default_config_builds_the_default_spec() -> None:
    assert build_spec(_config()) == QuantSpec()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["bits=w2a4"], {"w_bits": 2, "a_bits": 4}),
        (["bits=32"], {"w_bits": 32, "a_bits": 32}),
        (["grouping=per_channel", "method=lsq"], {"groups": "per_channel", "method": "lsq"}),
        (["method.skip=[fc]", "method.first_last_bits=same"], {"skip": ["fc"]}),
        (["grouping.strategy=kmeans", "method.k_a=2.5"], {"group_strategy": "kmeans", "k_a": 2.5}),
    ],
)
def test_each_key_reaches_its_field(overrides: list[str], expected: dict) -> None:
    spec = build_spec(_config(*overrides))
    assert {field: getattr(spec, field) for field in expected} == expected
    assert isinstance(spec.skip, list)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bits.a=1", "bits.a=1 is not a valid bit-width: use 2..8, or 32 for 'not quantized'"),
        ("grouping.groups=0", "grouping.groups=0 must be an integer >= 1 or 'per_channel'"),
        ("grouping.strategy=random", "grouping.strategy='random' is unknown: use one of"),
        ("grouping.search_points=0", "grouping.search_points=0 must be >= 1"),
        ("method.name=ternary", "method.name='ternary' is unknown: use one of ["),
        ("method.k_w=-1", "method.k_w=-1.0 must be > 0"),
        ("method.act_momentum=2", "method.act_momentum=2.0 must be in (0, 1]"),
        ("method.first_last_bits=4", "method.first_last_bits=4 is unknown: use one of"),
        ("method.weight_grad=none", "method.weight_grad='none' is unknown: use one of"),
    ],
)
def test_a_bad_value_is_named_by_its_config_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_spec(_config(override))
    assert str(caught.value).startswith(message)


def test_errors_of_the_layer_checks_name_the_config_key_too() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 2, 3), nn.Conv2d(2, 4, 1))
    spec = QuantSpec(groups=4, first_last_bits="same")
    with pytest.raises(SpecError) as caught:
        layer_plan(model, spec)
    assert str(spec_error(caught.value)).startswith(
        "grouping.groups=4 is more than the 2 filters of layer 1"
    )
    with pytest.raises(SpecError) as caught:
        layer_plan(model, QuantSpec(skip=["*"]))
    assert str(spec_error(caught.value)) == (
        "method.skip=['*']: the model has no conv or linear layer left to quantize"
    )
