"""How a group weight quantizer picks each group's clip alpha (docs/method.md sections 4 and 7).

A method composes one of these policies with the group quantizer: the per-group QL_2 search
(GDRQ), Scale-Clip's k_w * mean|W_g|, a learned clip (LSQ, or GDRQ with alpha=learned) and
max|W_g| (the minmax baseline). `spec.alpha` chooses among them (ALPHA_CHOICES): alpha=max
with grouping=per_channel is per-channel min-max, the post-training baseline.

A policy is called with the tensor being rounded, each filter's group and the index of the
training step that this forward starts (None outside a new training step: evaluation, or a
layer called again within a step), and returns the (groups,) clips.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from gdrq_bench.quant.fake_quant import grad_scale, level_range
from gdrq_bench.quant.groups import group_max_abs, group_mean_abs, search_group_alpha
from gdrq_bench.quant.spec import QuantSpec


def due(step: int | None, every: int) -> bool:
    """A schedule of every `every` training steps (0: never) falls on `step` (None: no new
    training step)."""
    return step is not None and every > 0 and step % every == 0


class GroupClip(nn.Module):
    """The clip of each filter group; `name` says which rule it is (extra_repr, tests)."""

    name: ClassVar[str]

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, reshaped: Tensor, group_of: Tensor, step: int | None) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class MaxClip(GroupClip):
    """alpha_g = max|W_g|: nothing is clipped (the minmax baseline)."""

    name = "max"

    def forward(self, reshaped: Tensor, group_of: Tensor, step: int | None) -> Tensor:
        return group_max_abs(reshaped, group_of, self.groups)


class MeanClip(GroupClip):
    """alpha_g = k * mean|W_g| (Scale-Clip's rule applied to each group's clip)."""

    name = "scale_clip"

    def __init__(self, groups: int, k: float) -> None:
        super().__init__(groups)
        self.k = k

    def forward(self, reshaped: Tensor, group_of: Tensor, step: int | None) -> Tensor:
        return self.k * group_mean_abs(reshaped, group_of, self.groups)


class SearchClip(GroupClip):
    """alpha_g = argmin QL_2 over a grid of `points` fractions of max|W_g|, searched on the
    first forward and again every `every` training steps (0: never again)."""

    name = "search"

    def __init__(self, groups: int, bits: int, points: int, every: int) -> None:
        super().__init__(groups)
        self.bits, self.points, self.every = bits, points, every
        self.register_buffer("group_alpha", torch.ones(groups))
        self.register_buffer("alpha_ready", torch.tensor(False))

    def forward(self, reshaped: Tensor, group_of: Tensor, step: int | None) -> Tensor:
        if not self.alpha_ready or due(step, self.every):
            self.group_alpha.copy_(
                search_group_alpha(reshaped, group_of, self.groups, self.bits, self.points)
            )
            self.alpha_ready.fill_(True)
        return self.group_alpha


class LearnedClip(GroupClip):
    """A trained clip per group (LSQ's step-size gradient, scaled by 1/sqrt(N_g * top)),
    started on the first forward from LSQ's rule 2 * mean|W_g| * sqrt(top) (`lsq_init`) or
    from the QL_2 search over `points` fractions of max|W_g|."""

    name = "learned"

    def __init__(self, groups: int, bits: int, lsq_init: bool, points: int = 64) -> None:
        super().__init__(groups)
        self.bits, self.lsq_init, self.points = bits, lsq_init, points
        self.learned_alpha = nn.Parameter(torch.ones(groups))
        self.register_buffer("alpha_ready", torch.tensor(False))

    def _initial(self, reshaped: Tensor, group_of: Tensor) -> Tensor:
        if self.lsq_init:
            top = level_range(self.bits, signed=True)[1]
            return 2 * group_mean_abs(reshaped, group_of, self.groups) * top**0.5
        return search_group_alpha(reshaped, group_of, self.groups, self.bits, self.points)

    def forward(self, reshaped: Tensor, group_of: Tensor, step: int | None) -> Tensor:
        if not self.alpha_ready:
            with torch.no_grad():
                self.learned_alpha.copy_(self._initial(reshaped, group_of))
            self.alpha_ready.fill_(True)
        top = level_range(self.bits, signed=True)[1]
        return grad_scale(self.learned_alpha, (reshaped.numel() / self.groups * top) ** -0.5)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, init={'lsq' if self.lsq_init else 'search'}"


class FrozenClip(GroupClip):
    """Clips fixed at given values: a policy's clips as they stood when the weights were
    written onto their grid (learned rounding), which a clip read off the weights again
    (max, k * mean) would move."""

    name = "frozen"

    def __init__(self, group_alpha: Tensor) -> None:
        super().__init__(group_alpha.numel())
        self.register_buffer("group_alpha", group_alpha.detach().clone())

    def forward(self, reshaped: Tensor, group_of: Tensor, step: int | None) -> Tensor:
        return self.group_alpha


# spec.alpha -> (spec, bits, groups) -> policy
ALPHA_CHOICES: dict[str, Callable[[QuantSpec, int, int], GroupClip]] = {
    "search": lambda spec, bits, groups: SearchClip(
        groups, bits, spec.search_points, spec.alpha_every
    ),
    "scale_clip": lambda spec, bits, groups: MeanClip(groups, spec.k_w),
    "learned": lambda spec, bits, groups: LearnedClip(
        groups, bits, lsq_init=False, points=spec.search_points
    ),
    "max": lambda spec, bits, groups: MaxClip(groups),
}


def chosen_clip(spec: QuantSpec, bits: int, groups: int) -> GroupClip:
    """The policy spec.alpha names (QuantSpec has checked that it is one of ALPHA_MODES)."""
    return ALPHA_CHOICES[spec.alpha](spec, bits, groups)
