"""Building the run's QuantSpec from the config; a bad value is named by its config key."""

from __future__ import annotations

from omegaconf import DictConfig

from gdrq_bench.errors import ConfigError
from gdrq_bench.quant import QuantSpec

# QuantSpec field -> the config key a user sets, so errors name what to change.
SPEC_KEYS = {
    "method": "method.name",
    "w_bits": "bits.w",
    "a_bits": "bits.a",
    "groups": "grouping.groups",
    "group_strategy": "grouping.strategy",
    "alpha_every": "grouping.alpha_every",
    "regroup_every": "grouping.regroup_every",
    "search_points": "grouping.search_points",
    "alpha": "grouping.alpha",
    "k_w": "method.k_w",
    "k_a": "method.k_a",
    "weight_stat": "method.weight_stat",
    "act_stat": "method.act_stat",
    "act_momentum": "method.act_momentum",
    "first_last_bits": "method.first_last_bits",
    "weight_grad": "method.weight_grad",
    "clip_style": "method.clip_style",
    "scale_clip_qat": "method.scale_clip_qat",
    "skip": "method.skip",
}


def build_spec(cfg: DictConfig) -> QuantSpec:
    """The QuantSpec of a run config; a bad value raises ConfigError naming its config key."""
    spec = QuantSpec(
        method=cfg.method.name,
        w_bits=cfg.bits.w,
        a_bits=cfg.bits.a,
        groups=cfg.grouping.groups,
        group_strategy=cfg.grouping.strategy,
        alpha=cfg.grouping.alpha,
        k_w=cfg.method.k_w,
        k_a=cfg.method.k_a,
        weight_stat=cfg.method.weight_stat,
        act_stat=cfg.method.act_stat,
        act_momentum=cfg.method.act_momentum,
        first_last_bits=cfg.method.first_last_bits,
        skip=list(cfg.method.skip),
        alpha_every=cfg.grouping.alpha_every,
        regroup_every=cfg.grouping.regroup_every,
        search_points=cfg.grouping.search_points,
        weight_grad=cfg.method.weight_grad,
        clip_style=cfg.method.clip_style,
        scale_clip_qat=cfg.method.scale_clip_qat,
    )
    try:
        return spec.validate()
    except ValueError as error:
        raise spec_error(error) from None


def spec_error(error: ValueError) -> ConfigError:
    """The quant package's ValueError ("groups=9 ...") as a ConfigError naming the config key
    ("grouping.groups=9 ...")."""
    message = str(error)
    for field_name, key in SPEC_KEYS.items():
        if message.startswith(f"{field_name}="):
            return ConfigError(key + message[len(field_name) :])
    return ConfigError(message)
