"""Scale-Clip: clip thresholds that are a multiple of a statistic of the tensor itself."""

from __future__ import annotations

import torch
from torch import Tensor

WEIGHT_STATS = ("mean_abs", "std")


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


def scale_clip_weight(weight: Tensor, k: float, stat: str = "mean_abs") -> Tensor:
    """clamp(W, -T, T) with T = k * s(W); gradient 1 inside the clip, 0 outside."""
    threshold = weight_threshold(weight, k, stat)
    return torch.clamp(weight, -threshold, threshold)
