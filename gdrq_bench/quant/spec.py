"""QuantSpec: every knob of a quantization run, with its default, validated once when built.

This is the one place a knob's type and default are written: the config schema of the bits,
grouping and method groups is made from these fields (config.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gdrq_bench.quant.choices import (
    ACT_STATS,
    ALPHA_MODES,
    CLIP_STYLES,
    FIRST_LAST_POLICIES,
    FLOAT_BITS,
    GROUP_STRATEGIES,
    PER_CHANNEL,
    WEIGHT_GRADS,
    WEIGHT_STATS,
    SpecError,
    check_bits,
    check_choice,
)

EDGE_BITS = 8  # first_last_bits=8

CHOICES = {
    "group_strategy": GROUP_STRATEGIES,
    "alpha": ALPHA_MODES,
    "weight_stat": WEIGHT_STATS,
    "act_stat": ACT_STATS,
    "first_last_bits": FIRST_LAST_POLICIES,
    "weight_grad": WEIGHT_GRADS,
    "clip_style": CLIP_STYLES,
}


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize a model. Fields marked [choice] in docs/method.md are all here. Building one
    validates it (SpecError names the first bad field); the method name is checked by the
    method registry (methods.get_method), which is built on this class."""

    method: str = "gdrq"
    w_bits: int = 4
    a_bits: int = 4
    groups: int | str = 4  # an int >= 1, or "per_channel"
    group_strategy: str = "sorted"
    alpha: str = "learned"
    k_w: float = 3.0
    k_a: float = 1.0
    weight_stat: str = "mean_abs"
    act_stat: str = "mse"  # Scale-Clip's activation statistic: mean_abs, max_abs or mse
    act_momentum: float = 0.1
    first_last_bits: int | str = EDGE_BITS  # "fp", 8 or "same"
    skip: list[str] = field(default_factory=list)  # fnmatch patterns of module names
    alpha_every: int = 10  # training steps between alpha searches
    regroup_every: int = 0  # training steps between regroupings; 0 keeps the first assignment
    search_points: int = 64
    weight_grad: str = "clip"  # STE outside the weight clips: "clip" (0) or "pass" (1)
    clip_style: str = "clamp"  # Scale-Clip of the weights in training: "clamp" or "project"
    # Scale-Clip of the weights stays on in QAT (a second clip before the group clip); False
    # writes it into the weights after the reshape stage (commit_scale_clip)
    scale_clip_qat: bool = False
    # Scale-Clip reshapes 8-bit layers too (weights and activations both at >= 8 bits); False
    # gives them the method's edge quantizers, as the 8-bit first and last layers get
    scale_clip_8bit: bool = False

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        if self.groups != PER_CHANNEL and (
            not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1
        ):
            raise SpecError("groups", self.groups, f" must be an integer >= 1 or '{PER_CHANNEL}'")
        for name, allowed in CHOICES.items():
            check_choice(name, getattr(self, name), allowed)
        for name in ("k_w", "k_a"):
            if not getattr(self, name) > 0:
                raise SpecError(name, getattr(self, name), " must be > 0")
        if not 0 < self.act_momentum <= 1:
            raise SpecError("act_momentum", self.act_momentum, " must be in (0, 1]")
        for name in ("alpha_every", "search_points"):
            if not getattr(self, name) >= 1:
                raise SpecError(name, getattr(self, name), " must be >= 1")
        if self.regroup_every < 0:
            raise SpecError("regroup_every", self.regroup_every, " must be >= 0")

    def layer_bits(self, is_first_or_last: bool) -> tuple[int, int]:
        """(weight bits, activation bits) of a layer under the first/last-layer policy."""
        unquantized = self.w_bits == FLOAT_BITS and self.a_bits == FLOAT_BITS
        if unquantized or not is_first_or_last or str(self.first_last_bits) == "same":
            return self.w_bits, self.a_bits
        if str(self.first_last_bits) == "fp":
            return FLOAT_BITS, FLOAT_BITS
        return EDGE_BITS, EDGE_BITS

    def scale_clips(self, w_bits: int, a_bits: int) -> bool:
        """Whether Scale-Clip (of a method that has it) reshapes a layer at these bits: every
        layer below 8 bits, a layer at 8 bits or more (weights and activations) only with
        scale_clip_8bit. 8-bit rounding loses little; the clip can cost more than it saves."""
        return self.scale_clip_8bit or min(w_bits, a_bits) < EDGE_BITS

    def layer_groups(self, out_channels: int) -> int:
        """The group count for a layer with `out_channels` filters. A layer with fewer filters
        than groups (a detector's 3-anchor objectness conv) gets one group per filter."""
        if self.groups == PER_CHANNEL:
            return out_channels
        return min(int(self.groups), out_channels)
