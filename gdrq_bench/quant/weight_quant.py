"""Weight quantizers: GDRQ's group quantizer (which, with another clip policy, also serves
minmax, LSQ and the ablations) and DoReFa's (docs/method.md sections 3, 4 and 7)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.fake_quant import fake_quantize, integer_levels, quant_step
from gdrq_bench.quant.group_clips import FrozenClip, GroupClip, chosen_clip, due
from gdrq_bench.quant.groups import assign_groups
from gdrq_bench.quant.modes import CLIP, FLOAT, QUANT, QuantizerBase
from gdrq_bench.quant.scale_clip import WeightScaleClip, filter_statistic
from gdrq_bench.quant.spec import QuantSpec


def _per_filter(values: Tensor, like: Tensor) -> Tensor:
    """View a (C_out,) vector so it broadcasts against a weight of like's shape."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


class WeightQuantizer(QuantizerBase):
    """Maps a layer's float weight to its fake-quantized weight.

    Subclasses say how the weight is reshaped before rounding (`reshape`) and which clip each
    output filter gets (`filter_alpha`); this class rounds, and exports the integers for folding.
    """

    def __init__(self, bits: int, grad_outside: bool = False) -> None:
        super().__init__(bits)
        self.grad_outside = grad_outside
        self.new_step = False  # this forward is the first since the weight last changed
        self._seen: tuple[weakref.ref, int] | None = None

    def _note_step(self, weight: Tensor) -> None:
        """A layer called several times per training step (a detector head shared by the
        pyramid levels) sees the same weight each time; only the first call of a step counts,
        so per-step schedules such as the alpha search run once per step. The weight is the
        same while it is the same tensor at the same version (in-place updates such as the
        optimizer's bump the version)."""
        seen = self._seen
        same = seen is not None and seen[0]() is weight and seen[1] == weight._version
        self.new_step = self.training and not same
        if self.training:
            self._seen = (weakref.ref(weight), weight._version)

    def reshape(self, weight: Tensor) -> Tensor:
        """The tensor that is rounded; also what the reshape phase trains with."""
        return weight

    def filter_alpha(self, reshaped: Tensor) -> Tensor:
        """(C_out,) clip of each output filter; may update state in training mode."""
        raise NotImplementedError

    def effective(self, weight: Tensor) -> Tensor:
        """The weight before rounding as the current mode sees it (statistics read this)."""
        return weight if self.mode == FLOAT else self.reshape(weight)

    def forward(self, weight: Tensor) -> Tensor:
        if self.mode == FLOAT:
            return weight
        self._note_step(weight)
        if self.new_step:
            self.start_step(weight)
        reshaped = self.reshape(weight)
        if self.mode == CLIP or self.bits == FLOAT_BITS:
            return reshaped
        alpha = _per_filter(self.filter_alpha(reshaped), reshaped)
        return fake_quantize(
            reshaped, self.bits, alpha, signed=True, grad_outside=self.grad_outside
        )

    def start_step(self, weight: Tensor) -> None:
        """Called before the first forward of each training step."""

    def commit_scale_clip(self, weight: Tensor) -> None:
        """Write Scale-Clip into the stored weight and stop applying it (no-op without one)."""

    @torch.no_grad()
    def clipped(self, weight: Tensor) -> Tensor | None:
        """The weight after every clip of the current mode, before rounding (Scale-Clip's,
        then each filter's rounding clip); None where the transform is not a clip."""
        return None

    @torch.no_grad()
    def integer_weight(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(integer weights as int8, (C_out,) step of each filter) of the eval-mode weight."""
        reshaped = self.reshape(weight)
        alpha = self.filter_alpha(reshaped).detach()
        ints = integer_levels(reshaped, self.bits, _per_filter(alpha, reshaped), signed=True)
        return ints.to(torch.int8), quant_step(alpha, self.bits, signed=True).to(weight.dtype)


class GroupWeightQuantizer(WeightQuantizer):
    """Filters split into `groups` groups (spec.group_strategy, regrouped every
    spec.regroup_every training steps), each with the clip `clip` gives it (default: the policy
    spec.alpha names, group_clips.py). With `scale_clip`, Scale-Clip of the weights at spec.k_w
    before grouping (scale_clip.WeightScaleClip); `commit_scale_clip` writes it into the
    weights and turns it off, so that a reshaped network is quantized by its group clips alone.
    """

    def __init__(
        self,
        bits: int,
        out_channels: int,
        groups: int,
        spec: QuantSpec | None = None,
        *,
        clip: GroupClip | None = None,
        scale_clip: bool = False,
    ) -> None:
        spec = spec or QuantSpec()
        super().__init__(bits, grad_outside=spec.weight_grad == "pass")
        self.groups, self.strategy = groups, spec.group_strategy
        self.stat, self.regroup_every = spec.weight_stat, spec.regroup_every
        self.register_buffer("group_of", torch.zeros(out_channels, dtype=torch.long))
        self.register_buffer("grouped", torch.tensor(False))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.clip = clip if clip is not None else chosen_clip(spec, bits, groups)
        self.scale_clip = (
            WeightScaleClip(spec.k_w, spec.weight_stat, spec.clip_style, self.grad_outside)
            if scale_clip
            else None
        )

    def start_step(self, weight: Tensor) -> None:
        if self.scale_clip is not None and self.scale_clip.start_step(weight):
            self._seen = (weakref.ref(weight), weight._version)  # the clip is not a new step

    def reshape(self, weight: Tensor) -> Tensor:
        return weight if self.scale_clip is None else self.scale_clip(weight)

    @torch.no_grad()
    def commit_scale_clip(self, weight: Tensor) -> None:
        if self.scale_clip is not None:
            self.scale_clip.commit(weight)

    @torch.no_grad()
    def clipped(self, weight: Tensor) -> Tensor:
        reshaped = self.effective(weight)
        if self.mode != QUANT or self.bits == FLOAT_BITS:
            return reshaped
        alpha = _per_filter(self.filter_alpha(reshaped), reshaped)
        return torch.minimum(torch.maximum(reshaped, -alpha), alpha)

    def filter_alpha(self, reshaped: Tensor) -> Tensor:
        step = int(self.steps) if self.training and self.new_step else None
        if not self.grouped or due(step, self.regroup_every):
            statistic = filter_statistic(reshaped, self.stat)
            self.group_of.copy_(assign_groups(statistic, self.groups, self.strategy))
            self.grouped.fill_(True)
        alpha = self.clip(reshaped, self.group_of, step)
        if step is not None:
            self.steps += 1
        return alpha[self.group_of]

    @torch.no_grad()
    def freeze_clip(self, weight: Tensor) -> None:
        """Keep each group's clip and grouping as they are for `weight` from now on (learned
        rounding writes the weights onto this grid)."""
        self.filter_alpha(self.reshape(weight))  # groups and clips exist
        self.clip = FrozenClip(self.clip(self.reshape(weight), self.group_of, None))
        self.regroup_every = 0

    def extra_repr(self) -> str:
        return f"bits={self.bits}, groups={self.groups}, strategy={self.strategy}, mode={self.mode}"


class DorefaWeightQuantizer(WeightQuantizer):
    """DoReFa: tanh(W) / max|tanh(W)| rounded on the signed grid with clip 1.

    [choice] The symmetric signed grid (2^b - 1 levels) instead of DoReFa's 2^b levels, so
    every method's weights are integers times a step and fold the same way.
    """

    def reshape(self, weight: Tensor) -> Tensor:
        squashed = torch.tanh(weight)
        return squashed / squashed.abs().max().clamp_min(1e-12)

    def filter_alpha(self, reshaped: Tensor) -> Tensor:
        return torch.ones(reshaped.shape[0], dtype=reshaped.dtype, device=reshaped.device)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, dorefa, mode={self.mode}"
