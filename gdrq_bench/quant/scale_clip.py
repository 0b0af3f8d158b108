"""Scale-Clip: clip thresholds that are a multiple of a statistic of the tensor itself.

Two ways to apply the weight clip during training ([choice], docs/method.md section 3):
`clamp` clips in the forward pass only, so the stored weights keep their values beyond T;
`project` writes the clip into the stored weights before each training forward (the weight
quantizer's start_step), so the network itself is reshaped and a clipped weight that the loss
pushes inward moves back inside.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from gdrq_bench.quant.choices import WEIGHT_STATS


def filter_statistic(weight: Tensor, stat: str = "mean_abs") -> Tensor:
    """s(W_i) for each output filter (row 0 of the weight): mean |W_i| or std(W_i)."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    if stat == "mean_abs":
        return rows.abs().mean(dim=1)
    if stat == "std":
        return rows.std(dim=1, unbiased=False)
    raise ValueError(f"stat={stat!r} is unknown: use one of {WEIGHT_STATS}")


def tensor_statistic(weight: Tensor, stat: str = "mean_abs") -> Tensor:
    """s(W) over the whole tensor, detached (a statistic, not a learned quantity)."""
    return filter_statistic(weight.reshape(1, -1), stat)[0]


def weight_threshold(weight: Tensor, k: float, stat: str = "mean_abs") -> Tensor:
    """T = k * s(W), recomputed from the current weights at each call."""
    return k * tensor_statistic(weight, stat)


def scale_clip_weight(
    weight: Tensor, k: float, stat: str = "mean_abs", grad_outside: bool = False
) -> Tensor:
    """clamp(W, -T, T) with T = k * s(W). Gradient 1 inside the clip; outside it 0, or 1 when
    `grad_outside` (straight through, so clipped weights keep learning)."""
    threshold = weight_threshold(weight, k, stat)
    clipped = torch.clamp(weight, -threshold, threshold)
    if grad_outside:
        return weight + (clipped - weight).detach()
    return clipped


class WeightScaleClip(nn.Module):
    """A weight quantizer's Scale-Clip at T = k * s(W), applied as `style` says, until
    `commit` writes it into the weights (then the group clips alone quantize them)."""

    def __init__(self, k: float, stat: str, style: str, grad_outside: bool) -> None:
        super().__init__()
        self.k, self.stat, self.style, self.grad_outside = k, stat, style, grad_outside
        self.register_buffer("on", torch.tensor(True))
        self.register_buffer("threshold", torch.tensor(0.0))  # T of the last `project` step
        self._projected: tuple[weakref.ref, int] | None = None  # the weight start_step clipped

    @torch.no_grad()
    def start_step(self, weight: Tensor) -> bool:
        """`project`: clip the stored weight at this step's T, which the forward then keeps;
        True when it did (the clip is not a new step)."""
        if self.style != "project" or not self.on:
            return False
        self.threshold.copy_(weight_threshold(weight, self.k, self.stat))
        weight.clamp_(-self.threshold, self.threshold)
        self._projected = (weakref.ref(weight), weight._version)
        return True

    def _still_projected(self, weight: Tensor) -> bool:
        """`weight` is the tensor start_step clipped at `threshold`, unchanged since."""
        projected = self._projected
        return (
            projected is not None and projected[0]() is weight and projected[1] == weight._version
        )

    def forward(self, weight: Tensor) -> Tensor:
        if not self.on:
            return weight
        if self.style == "project" and self.threshold > 0:
            if self.training and self._still_projected(weight):
                # clipped at this T by start_step and unchanged: the clamp below would give
                # the same values (a zero may carry the other sign) and the same gradient,
                # at three passes over the weight
                return weight
            # the stored weights were clipped at this T: gradient 1 on the clip's ends too
            return weight + (weight.clamp(-self.threshold, self.threshold) - weight).detach()
        return scale_clip_weight(weight, self.k, self.stat, self.grad_outside)

    @torch.no_grad()
    def commit(self, weight: Tensor) -> None:
        """Write the Scale-Clipped weight into `weight` and stop clipping."""
        if self.on:
            weight.copy_(self(weight))
            self.on.fill_(False)

    def extra_repr(self) -> str:
        return f"k={self.k}, stat={self.stat}, style={self.style}, on={bool(self.on)}"
