"""Weight quantizers: GDRQ's group quantizer (which also serves minmax, LSQ and the ablations)
and DoReFa's (METHOD.md sections 3, 4 and 7)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.fake_quant import (
    fake_quantize,
    grad_scale,
    integer_levels,
    level_range,
    quant_step,
)
from gdrq_bench.quant.groups import assign_groups, group_max_abs, group_mean_abs, search_group_alpha
from gdrq_bench.quant.modes import CLIP, FLOAT, QUANT, QuantizerBase
from gdrq_bench.quant.scale_clip import filter_statistic, scale_clip_weight, weight_threshold
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
    """Filters split into `groups` groups, each with its own clip; the knobs come from `spec`.

    alpha modes (`alpha_mode`, default spec.alpha): `search` (argmin QL_2 on a grid, redone
    every `alpha_every` training steps), `scale_clip` (k_w * mean|W_g|), `max` (max|W_g|, the
    minmax baseline) and `learned` (a parameter initialised by `search`, or by LSQ's rule when
    `lsq_init`, trained with the LSQ gradient). `scale_clip` turns on Scale-Clip of the weights
    at spec.k_w before grouping, applied as spec.clip_style says (scale_clip.py);
    `commit_scale_clip` writes it into the weights and turns it off, so that a reshaped network
    is quantized by its group clips alone.
    """

    def __init__(
        self,
        bits: int,
        out_channels: int,
        groups: int,
        spec: QuantSpec | None = None,
        *,
        alpha_mode: str | None = None,
        scale_clip: bool = False,
        lsq_init: bool = False,
    ) -> None:
        spec = spec or QuantSpec()
        super().__init__(bits, grad_outside=spec.weight_grad == "pass")
        self.groups, self.strategy = groups, spec.group_strategy
        self.alpha_mode = alpha_mode or spec.alpha
        self.k_w, self.clip_k = spec.k_w, spec.k_w if scale_clip else None
        self.clip_style, self.stat = spec.clip_style, spec.weight_stat
        self.alpha_every, self.regroup_every = spec.alpha_every, spec.regroup_every
        self.search_points, self.lsq_init = spec.search_points, lsq_init
        self.register_buffer("group_of", torch.zeros(out_channels, dtype=torch.long))
        self.register_buffer("grouped", torch.tensor(False))
        self.register_buffer("group_alpha", torch.ones(groups))
        self.register_buffer("alpha_ready", torch.tensor(False))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self.register_buffer("scale_clip_on", torch.tensor(scale_clip))
        self.register_buffer("threshold", torch.tensor(0.0))  # T of the last `project` step
        self._projected: tuple[weakref.ref, int] | None = None  # the weight start_step clipped
        if self.alpha_mode == "learned":
            self.learned_alpha = nn.Parameter(torch.ones(groups))

    def _scale_clipping(self) -> bool:
        return self.clip_k is not None and bool(self.scale_clip_on)

    def start_step(self, weight: Tensor) -> None:
        """`project`: clip the stored weight at this step's T, which the forward then keeps."""
        if self.clip_style == "project" and self._scale_clipping():
            self.threshold.copy_(weight_threshold(weight, self.clip_k, self.stat))
            with torch.no_grad():
                weight.clamp_(-self.threshold, self.threshold)
            self._seen = (weakref.ref(weight), weight._version)  # the clip is not a new step
            self._projected = self._seen

    def _still_projected(self, weight: Tensor) -> bool:
        """`weight` is the tensor start_step clipped at `threshold`, unchanged since."""
        projected = self._projected
        return (
            projected is not None and projected[0]() is weight and projected[1] == weight._version
        )

    def reshape(self, weight: Tensor) -> Tensor:
        if not self._scale_clipping():
            return weight
        if self.clip_style == "project" and self.threshold > 0:
            if self.training and self._still_projected(weight):
                # clipped at this T by start_step and unchanged: the clamp below would give
                # the same values (a zero may carry the other sign) and the same gradient,
                # at three passes over the weight
                return weight
            # the stored weights were clipped at this T: gradient 1 on the clip's ends too
            return weight + (weight.clamp(-self.threshold, self.threshold) - weight).detach()
        return scale_clip_weight(weight, self.clip_k, self.stat, self.grad_outside)

    @torch.no_grad()
    def commit_scale_clip(self, weight: Tensor) -> None:
        """Write the Scale-Clipped weight into `weight` and stop clipping: from here on the
        stored weights are the reshaped network, quantized by the group clips alone."""
        if self._scale_clipping():
            weight.copy_(self.reshape(weight))
            self.scale_clip_on.fill_(False)

    @torch.no_grad()
    def clipped(self, weight: Tensor) -> Tensor:
        reshaped = self.effective(weight)
        if self.mode != QUANT or self.bits == FLOAT_BITS:
            return reshaped
        alpha = _per_filter(self.filter_alpha(reshaped), reshaped)
        return torch.minimum(torch.maximum(reshaped, -alpha), alpha)

    def _due(self, every: int) -> bool:
        return self.training and self.new_step and every > 0 and int(self.steps) % every == 0

    def _initial_alpha(self, reshaped: Tensor) -> Tensor:
        if self.lsq_init:
            top = level_range(self.bits, signed=True)[1]
            return 2 * group_mean_abs(reshaped, self.group_of, self.groups) * top**0.5
        return search_group_alpha(
            reshaped, self.group_of, self.groups, self.bits, self.search_points
        )

    def _computed_alpha(self, reshaped: Tensor) -> Tensor:
        if self.alpha_mode == "scale_clip":
            return self.k_w * group_mean_abs(reshaped, self.group_of, self.groups)
        if self.alpha_mode == "max":
            return group_max_abs(reshaped, self.group_of, self.groups)
        if not self.alpha_ready or self._due(self.alpha_every):
            self.group_alpha.copy_(self._initial_alpha(reshaped))
            self.alpha_ready.fill_(True)
        return self.group_alpha

    def filter_alpha(self, reshaped: Tensor) -> Tensor:
        if not self.grouped or self._due(self.regroup_every):
            statistic = filter_statistic(reshaped, self.stat)
            self.group_of.copy_(assign_groups(statistic, self.groups, self.strategy))
            self.grouped.fill_(True)
        if self.alpha_mode == "learned":
            if not self.alpha_ready:
                with torch.no_grad():
                    self.learned_alpha.copy_(self._initial_alpha(reshaped))
                self.alpha_ready.fill_(True)
            top = level_range(self.bits, signed=True)[1]
            alpha = grad_scale(self.learned_alpha, (reshaped.numel() / self.groups * top) ** -0.5)
        else:
            alpha = self._computed_alpha(reshaped)
        if self.training and self.new_step:
            self.steps += 1
        return alpha[self.group_of]

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, groups={self.groups}, strategy={self.strategy}, "
            f"alpha={self.alpha_mode}, scale_clip={self.clip_k} ({self.clip_style}), "
            f"mode={self.mode}"
        )


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
