"""Building the run's QuantSpec from the config: each field read from its key in SPEC_KEYS, and
a bad value reported by that key."""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import SPEC_KEYS
from gdrq_bench.quant import QuantSpec, SpecError, get_method


def build_spec(cfg: DictConfig) -> QuantSpec:
    """The QuantSpec of a run config (its method looked up); a bad value raises ConfigError
    naming its config key."""
    values = {name: OmegaConf.select(cfg, key) for name, key in SPEC_KEYS.items()}
    plain = {k: list(v) if isinstance(v, ListConfig) else v for k, v in values.items()}
    try:
        spec = QuantSpec(**plain)
        get_method(spec.method)
    except SpecError as error:
        raise spec_error(error) from None
    return spec


def spec_error(error: SpecError) -> ConfigError:
    """The quant package's SpecError ("groups=9 ...") as a ConfigError naming the config key
    ("grouping.groups=9 ...")."""
    return ConfigError(error.named(SPEC_KEYS.get(error.field, error.field)))
