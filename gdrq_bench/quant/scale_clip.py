"""Scale-Clip: clip thresholds that are a multiple of a statistic of the tensor itself.

Two ways to apply the weight clip during training ([choice], METHOD.md section 3):
`clamp` clips in the forward pass only, so the stored weights keep their values beyond T;
`project` writes the clip into the stored weights before each training forward (the weight
quantizer's start_step), so the network itself is reshaped and a clipped weight that the loss
pushes inward moves back inside.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
