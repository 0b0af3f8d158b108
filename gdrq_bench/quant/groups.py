"""Group-based quantization: which filters share a clip, and which clip (METHOD.md section 4)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor

from gdrq_bench.quant.choices import GROUP_STRATEGIES
from gdrq_bench.quant.fake_quant import integer_levels, quant_step


def _labels_from_sorted_chunks(order: Tensor, sizes: list[int]) -> Tensor:
    labels = torch.empty_like(order)
    for group, chunk in enumerate(torch.split(order, sizes)):
        labels[chunk] = group
    return labels


def _near_equal_sizes(count: int, groups: int) -> list[int]:
    return [len(chunk) for chunk in torch.tensor_split(torch.arange(count), groups)]


def _nonempty_cuts(cuts: list[int], count: int) -> list[int]:
    """Move cut indices just enough that every run between them holds at least one value."""
    fixed: list[int] = []
    for index, cut in enumerate(cuts):
        lower = (fixed[-1] if fixed else 0) + 1
        upper = count - (len(cuts) - index)
        fixed.append(min(max(cut, lower), upper))
    return fixed


def _kmeans_1d_sizes(sorted_values: Tensor, groups: int, iterations: int = 50) -> list[int]:
    """Lloyd's algorithm in 1-D, where clusters are runs of the sorted values.

    Cuts start at the equal-size split and move to the midpoints between cluster means; each
    cluster keeps at least one member so the group count is exactly `groups`.
    """
    count = sorted_values.numel()
    sizes = _near_equal_sizes(count, groups)
    for _ in range(iterations):
        bounds = [0, *torch.cumsum(torch.tensor(sizes), 0).tolist()]
        means = torch.stack([sorted_values[a:b].mean() for a, b in pairwise(bounds)])
        cuts = torch.searchsorted(sorted_values, (means[:-1] + means[1:]) / 2).tolist()
        bounds = [0, *_nonempty_cuts(cuts, count), count]
        new_sizes = [b - a for a, b in pairwise(bounds)]
        if new_sizes == sizes:
            break
        sizes = new_sizes
    return sizes


def assign_groups(statistic: Tensor, groups: int, strategy: str = "sorted") -> Tensor:
    """Group index (0..groups-1) of each filter; groups are numbered by ascending statistic.

    `sorted`: rank by the statistic, cut into near-equal groups. `contiguous`: index blocks.
    `kmeans`: 1-D k-means on log(statistic), so groups are of similar range but uneven size.
    """
    count = statistic.numel()
    if not 1 <= groups <= count:
        raise ValueError(f"groups={groups} must be in 1..{count} (the number of filters)")
    if strategy == "contiguous":
        return _labels_from_sorted_chunks(torch.arange(count), _near_equal_sizes(count, groups))
    if strategy not in GROUP_STRATEGIES:
        raise ValueError(f"group_strategy={strategy!r} is unknown: use one of {GROUP_STRATEGIES}")
    order = torch.argsort(statistic, stable=True)
    if strategy == "sorted":
        return _labels_from_sorted_chunks(order, _near_equal_sizes(count, groups))
    log_sorted = torch.log(statistic[order].double().clamp_min(1e-30))
    return _labels_from_sorted_chunks(order, _kmeans_1d_sizes(log_sorted, groups))


def group_max_abs(weight: Tensor, group_of: Tensor, groups: int) -> Tensor:
    """max |W| over the filters of each group."""
    per_filter = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1)
    out = torch.zeros(groups, dtype=weight.dtype, device=weight.device)
    return out.scatter_reduce(0, group_of, per_filter, reduce="amax", include_self=False)


def group_mean_abs(weight: Tensor, group_of: Tensor, groups: int) -> Tensor:
    """mean |W| over all the weights of each group."""
    rows = weight.detach().reshape(weight.shape[0], -1).abs()
    sums = torch.zeros(groups, dtype=weight.dtype, device=weight.device)
    sums.index_add_(0, group_of, rows.sum(dim=1))
    counts = torch.bincount(group_of, minlength=groups).to(weight.dtype) * rows.shape[1]
    return sums / counts


def search_group_alpha(
    weight: Tensor,
    group_of: Tensor,
    groups: int,
    bits: int,
    points: int = 64,
    target: Tensor | None = None,
) -> Tensor:
    """alpha_g = argmin QL_2(W_g, alpha) over alpha in {f * max|W_g| : f = 1/points, ..., 1}.

    The error is measured against `target` (default the weight itself): statistics pass the
    stored weights there, so a clip applied before the search counts in the error. One pass
    per candidate fraction over the whole tensor; the loop never runs over groups.
    """
    weight = weight.detach()
    rows = weight.reshape(weight.shape[0], -1)
    target_rows = rows if target is None else target.detach().reshape(rows.shape)
    top = group_max_abs(weight, group_of, groups)
    best_alpha = top.clone()
    best_error = torch.full_like(top, float("inf"))
    for fraction in torch.linspace(1.0 / points, 1.0, points, dtype=weight.dtype):
        alpha_rows = (fraction * top)[group_of].unsqueeze(1)
        dequantized = integer_levels(rows, bits, alpha_rows, True) * quant_step(
            alpha_rows, bits, True
        )
        error_rows = (target_rows - dequantized).square().sum(dim=1)
        error = torch.zeros_like(top).index_add_(0, group_of, error_rows)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_alpha = torch.where(better, fraction * top, best_alpha)
    return best_alpha
