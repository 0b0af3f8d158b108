"""QuantSpec: every knob of a quantization run, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gdrq_bench.quant.act_quant import ACT_STATS
from gdrq_bench.quant.fake_quant import FLOAT_BITS, check_bits
from gdrq_bench.quant.groups import GROUP_STRATEGIES
from gdrq_bench.quant.scale_clip import CLIP_STYLES, WEIGHT_STATS

ALPHA_MODES = ("search", "scale_clip", "learned")
FIRST_LAST_POLICIES = ("fp", "8", "same")
PER_CHANNEL = "per_channel"


@dataclass
class QuantSpec:
    """How to quantize a model. Fields marked [choice] in METHOD.md are all here."""

    method: str = "gdrq"
    w_bits: int = 4
    a_bits: int = 4
    groups: int | str = 4  # an int >= 1, or "per_channel"
    group_strategy: str = "sorted"
    alpha: str = "search"
    k_w: float = 3.0
    k_a: float = 1.0
    weight_stat: str = "mean_abs"
    act_stat: str = "max_abs"  # Scale-Clip's activation statistic: mean_abs or max_abs
    act_momentum: float = 0.1
    first_last_bits: int | str = 8  # "fp", 8 or "same"
    skip: list[str] = field(default_factory=list)  # fnmatch patterns of module names
    alpha_every: int = 10  # training steps between alpha searches
    regroup_every: int = 0  # training steps between regroupings; 0 keeps the first assignment
    search_points: int = 64
    weight_grad: Literal["clip", "pass"] = "clip"  # STE outside the weight clip: 0 or 1
    clip_style: str = "project"  # Scale-Clip of the weights in training: "clamp" or "project"
    # Scale-Clip of the weights stays on in QAT (a second clip before the group clip); False
    # writes it into the weights after the reshape stage (commit_scale_clip)
    scale_clip_qat: bool = False

    def validate(self) -> QuantSpec:
        """Raise ValueError naming the first bad field; return self."""
        from gdrq_bench.quant.methods import METHODS

        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is unknown: use one of {sorted(METHODS)}")
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        if self.groups != PER_CHANNEL and (
            not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1
        ):
            raise ValueError(f"groups={self.groups!r} must be an integer >= 1 or '{PER_CHANNEL}'")
        choices = {
            "group_strategy": GROUP_STRATEGIES,
            "alpha": ALPHA_MODES,
            "weight_stat": WEIGHT_STATS,
            "act_stat": ACT_STATS,
            "first_last_bits": FIRST_LAST_POLICIES,
            "weight_grad": ("clip", "pass"),
            "clip_style": CLIP_STYLES,
        }
        for name, allowed in choices.items():
            if str(getattr(self, name)) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is unknown: use one of {allowed}")
        for name in ("k_w", "k_a"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if not 0 < self.act_momentum <= 1:
            raise ValueError(f"act_momentum={self.act_momentum!r} must be in (0, 1]")
        for name in ("alpha_every", "search_points"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.regroup_every < 0:
            raise ValueError(f"regroup_every={self.regroup_every!r} must be >= 0")
        return self

    def layer_bits(self, is_first_or_last: bool) -> tuple[int, int]:
        """(weight bits, activation bits) of a layer under the first/last-layer policy."""
        unquantized = self.w_bits == FLOAT_BITS and self.a_bits == FLOAT_BITS
        if unquantized or not is_first_or_last or str(self.first_last_bits) == "same":
            return self.w_bits, self.a_bits
        if str(self.first_last_bits) == "fp":
            return FLOAT_BITS, FLOAT_BITS
        return 8, 8

    def layer_groups(self, out_channels: int) -> int:
        """The group count for a layer with `out_channels` filters. A layer with fewer filters
        than groups (a detector's 3-anchor objectness conv) gets one group per filter."""
        if self.groups == PER_CHANNEL:
            return out_channels
        return min(int(self.groups), out_channels)
