"""Activation quantizers: Scale-Clip's EMA clip and the baselines' clips (docs/method.md 2-3, 7)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gdrq_bench.quant.act_ranges import batch_mse_clip
from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.fake_quant import (
    MIN_ALPHA,
    fake_quantize,
    grad_scale,
    level_range,
)
from gdrq_bench.quant.modes import CLIP, FLOAT, QuantizerBase


class ActQuantizer(QuantizerBase):
    """Quantizes a layer's input activations with one clip `alpha`.

    Whether the grid is signed is read off the first batch seen ([choice]: inputs with any
    negative value, like a network's normalised input or a residual sum, use the signed grid;
    post-ReLU inputs the unsigned one) and then kept, so a folded model knows it.
    """

    def __init__(self, bits: int) -> None:
        super().__init__(bits)
        self.register_buffer("sign_state", torch.tensor(-1, dtype=torch.int8))

    @property
    def signed(self) -> bool:
        return bool(self.sign_state.item() == 1)

    def _observe_sign(self, x: Tensor) -> None:
        if self.sign_state.item() < 0:
            self.sign_state.fill_(int(bool((x.detach() < 0).any())))

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == FLOAT:
            return x
        self._observe_sign(x)
        alpha = self.alpha(x)
        if self.mode == CLIP or self.bits == FLOAT_BITS:
            return self.clip_only(x, alpha)
        return self.quantize(x, alpha)

    def alpha(self, x: Tensor) -> Tensor:
        """The clip for this batch; updates running statistics in training mode."""
        raise NotImplementedError

    def clip_only(self, x: Tensor, alpha: Tensor) -> Tensor:
        """The reshape-phase transform: identity unless the method clips without rounding."""
        return x

    def quantize(self, x: Tensor, alpha: Tensor) -> Tensor:
        return fake_quantize(x, self.bits, alpha, signed=self.signed)

    @torch.no_grad()
    def clipped_input(self, x: Tensor) -> Tensor:
        """x after the clip the current mode applies (nothing in `float` mode), at the frozen
        clip, before any rounding: what statistics of the clip compare x with."""
        if self.mode == FLOAT:
            return x
        alpha = self.frozen_alpha().to(x.dtype)
        if self.mode == CLIP or self.bits == FLOAT_BITS:
            return self.clip_only(x, alpha)
        return torch.minimum(torch.maximum(x, -alpha if self.signed else 0 * alpha), alpha)

    @torch.no_grad()
    def calibrate(self, alpha: float, signed: bool) -> None:
        """Post-training quantization: the grid's sign and the clip `alpha` that calibration
        found (act_ranges.py), in place of what the first batch and training would give."""
        self.sign_state.fill_(int(signed))
        self.take_clip(alpha)

    def take_clip(self, alpha: float) -> None:
        """Make `alpha` the clip of every later forward (until training changes it)."""
        raise NotImplementedError

    @torch.no_grad()
    def frozen_alpha(self) -> Tensor:
        """The clip used in eval mode, for folding."""
        return self.alpha(torch.zeros(0)).detach()

    def extra_repr(self) -> str:
        return f"bits={self.bits}, mode={self.mode}"


class RunningStatClip(ActQuantizer):
    """alpha = scale * EMA of a batch statistic, updated in training mode and frozen in eval.

    An unobserved quantizer takes the statistic of the first batch it sees, in either mode.
    """

    def __init__(self, bits: int, statistic: str, scale: float, momentum: float) -> None:
        super().__init__(bits)
        self.statistic, self.scale, self.momentum = statistic, scale, momentum
        self.register_buffer("running_stat", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))

    def _batch_stat(self, x: Tensor) -> Tensor:
        x = x.detach()
        if self.statistic == "mse":
            return torch.tensor(batch_mse_clip(x, self.bits, unsigned=not self.signed))
        if self.statistic == "max_abs":
            # max |x| from one aminmax pass: |x| is exact, so max(-min, max) is its maximum
            low, high = torch.aminmax(x)
            return torch.maximum(-low, high)
        if not self.signed and bool(x.min() >= 0):
            # |x| is x: the same reduction over the same values, without writing |x| (on a
            # post-ReLU activation the abs pass cost more than the mean itself)
            return x.mean()
        return x.abs().mean()

    def alpha(self, x: Tensor) -> Tensor:
        if x.numel() and (self.training or not self.observed):
            stat = self._batch_stat(x).to(self.running_stat.dtype)
            if self.observed:
                stat = (1 - self.momentum) * self.running_stat + self.momentum * stat
            self.running_stat.copy_(stat)
            self.observed.fill_(True)
        return (self.scale * self.running_stat).clamp_min(MIN_ALPHA)

    def take_clip(self, alpha: float) -> None:
        self.running_stat.fill_(alpha / self.scale)
        self.observed.fill_(True)


class ScaleClipAct(RunningStatClip):
    """Scale-Clip: alpha = k_a * EMA(s(a)), s = mean |a| (or max |a|, or the batch's MSE
    clip: `act_stat`); clips in the reshape phase too."""

    def __init__(self, bits: int, k_a: float, momentum: float, stat: str) -> None:
        super().__init__(bits, stat, k_a, momentum)

    def clip_only(self, x: Tensor, alpha: Tensor) -> Tensor:
        return torch.clamp(x, -alpha if self.signed else 0.0, alpha)


class MinMaxAct(RunningStatClip):
    """Per-tensor min/max: alpha = EMA(max |a|)."""

    def __init__(self, bits: int, momentum: float) -> None:
        super().__init__(bits, "max_abs", 1.0, momentum)


class FixedClipAct(ActQuantizer):
    """DoReFa's activations: clip to [0, 1] (or [-1, 1] when signed), then round."""

    def alpha(self, x: Tensor) -> Tensor:
        return torch.tensor(1.0)

    def take_clip(self, alpha: float) -> None:
        """The clip is DoReFa's fixed 1: calibration gives only the sign."""


class LearnedAct(ActQuantizer):
    """A trained clip, initialised from the first batch seen.

    `lsq`: gradient of the rounding (LSQ) with LSQ's gradient scale 1/sqrt(numel * n); the
    init is LSQ's step 2 mean|a| / sqrt(n). `pact`: gradient 1 where the input is clipped,
    0 inside (PACT); the init is the first batch's max |a|.
    """

    def __init__(self, bits: int, style: str) -> None:
        super().__init__(bits)
        self.style = style
        self.clip = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("observed", torch.tensor(False))

    def alpha(self, x: Tensor) -> Tensor:
        top = level_range(self.bits, self.signed)[1] if self.bits != FLOAT_BITS else 1
        if x.numel() and not self.observed:
            with torch.no_grad():
                magnitude = x.detach().abs()
                init = 2 * magnitude.mean() * top**0.5 if self.style == "lsq" else magnitude.max()
                self.clip.copy_(init.clamp_min(MIN_ALPHA))
                self.observed.fill_(True)
        if self.style == "lsq" and x.numel():
            return grad_scale(self.clip, (x[0].numel() * top) ** -0.5)
        return self.clip

    def take_clip(self, alpha: float) -> None:
        self.clip.data.fill_(alpha)
        self.observed.fill_(True)

    def quantize(self, x: Tensor, alpha: Tensor) -> Tensor:
        if self.style == "lsq":
            return super().quantize(x, alpha)
        clipped = torch.minimum(torch.maximum(x, -alpha if self.signed else 0 * alpha), alpha)
        rounded = fake_quantize(clipped.detach(), self.bits, alpha.detach(), self.signed)
        return clipped + (rounded - clipped).detach()
