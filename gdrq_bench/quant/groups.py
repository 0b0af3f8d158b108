"""Group-based quantization: which filters share a clip, and which clip (docs/method.md 4)."""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor

from gdrq_bench.quant.choices import GROUP_STRATEGIES
from gdrq_bench.quant.fake_quant import level_range, quant_step


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


# Elements of one (candidates, rows, columns) block of the alpha search: small enough to stay
# in cache across the block's six elementwise passes, large enough that the per-block Python
# and dispatch cost is small against them.
SEARCH_BLOCK = 1 << 19
# A layer whose largest group holds more weights than this is searched in two stages: every
# candidate on a sample of about this many weights per group, then, on all the weights, the
# candidates within SEARCH_WINDOW grid steps of the sample's choice.
SEARCH_SAMPLE = 1 << 15
SEARCH_WINDOW = 2


def _blocks(count: int, width: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive runs of at most `width` among `count` indices."""
    return [(start, min(start + width, count)) for start in range(0, count, width)]


def _row_errors(rows: Tensor, target_rows: Tensor, steps: Tensor, bits: int) -> Tensor:
    """(candidates, rows) squared error ||target_i - Q(W_i; step)||^2 of each row at each
    row's step in `steps` (candidates, rows): fake_quantize's values bit for bit, block by
    block over at most SEARCH_BLOCK elements; a row is summed as one reduction while a block
    holds whole rows (a row longer than a block is summed block by block)."""
    lo, hi = level_range(bits, True)
    points, (count, width) = steps.shape[0], rows.shape
    row_error = rows.new_zeros(points, count)
    per_block = max(1, SEARCH_BLOCK // points)
    for first, last in _blocks(count, max(1, per_block // width)):
        step = steps[:, first:last, None]
        for start, stop in _blocks(width, per_block):
            block = rows[None, first:last, start:stop] / step
            block.clamp_(lo, hi).round_().mul_(step)
            block.sub_(target_rows[None, first:last, start:stop]).square_()
            row_error[:, first:last] += block.sum(dim=2)
    return row_error


def _group_argmin(row_error: Tensor, group_of: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """(index of the smallest error, that error) per group, summing the rows of each group;
    NaN never wins (an error of inf) and among equal errors the first candidate does."""
    error = row_error.new_zeros(row_error.shape[0], groups).index_add_(1, group_of, row_error)
    error = torch.where(error.isnan(), torch.inf, error)
    best_error, best = error.min(dim=0)
    return best, best_error


class _Search(NamedTuple):
    """One layer's search: its weight rows, the rows the error is measured against, every
    candidate's step per filter (points, filters), the filters' groups, the bit width."""

    rows: Tensor
    target_rows: Tensor
    steps: Tensor
    group_of: Tensor
    groups: int
    bits: int


def _best_of(search: _Search, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """(candidate, exact error) with the smallest error per group among `candidates`
    (k, groups), which list each group's candidates in ascending order."""
    window_steps = search.steps.gather(0, candidates[:, search.group_of])
    errors = _row_errors(search.rows, search.target_rows, window_steps, search.bits)
    best, error = _group_argmin(errors, search.group_of, search.groups)
    return candidates.gather(0, best[None])[0], error


def _descend(search: _Search, start: Tensor) -> tuple[Tensor, Tensor]:
    """From each group's candidate `start`, the exact errors of the candidates within
    SEARCH_WINDOW grid steps; while a group's smallest lies on the window's edge (not the
    grid's), the window moves there. Ends at a local minimum of the exact error as wide as the
    window; returns (candidate, error) per group."""
    points = search.steps.shape[0]
    offsets = torch.arange(-SEARCH_WINDOW, SEARCH_WINDOW + 1, device=start.device)
    near = start
    for _ in range(points):
        candidates = (near[None, :] + offsets[:, None]).clamp_(0, points - 1)  # ascending
        best, error = _best_of(search, candidates)
        edge = ((best - near).abs() == SEARCH_WINDOW) & (best > 0) & (best < points - 1)
        near = best
        if not bool(edge.any()):
            break
    return near, error


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
    stored weights there, so a clip applied before the search counts in the error. Every
    candidate of every group is evaluated at once (_row_errors); among equal errors the
    smallest clip wins. A layer with more than SEARCH_SAMPLE weights in a group is searched in
    two stages: every candidate on a fixed sample of its columns, then exact errors on all the
    weights: a descent (_descend) from the sample's choice to a local minimum, and the
    SEARCH_WINDOW + 1 candidates at each end of the grid (the largest clips, where a few
    outliers the sample may miss keep their values; the smallest, where clipping nearly
    everything wins on heavy tails); the best of these wins. That is the full search's alpha
    whenever its grid point is one of them (tests/test_groups.py checks it on random and
    heavy-tailed tensors, with the sample forced small).
    """
    weight = weight.detach()
    rows = weight.reshape(weight.shape[0], -1)
    target_rows = rows if target is None else target.detach().reshape(rows.shape)
    top = group_max_abs(weight, group_of, groups)
    fractions = torch.linspace(1.0 / points, 1.0, points, dtype=weight.dtype).to(top.device)
    alphas = fractions[:, None] * top[None, :]  # (points, groups)
    steps = quant_step(alphas, bits, True)[:, group_of]  # (points, filters)
    width = rows.shape[1]
    largest = int(torch.bincount(group_of, minlength=groups).max()) * width
    if largest > SEARCH_SAMPLE and points > 4 * SEARCH_WINDOW + 2:
        sampled = max(1, SEARCH_SAMPLE * width // largest)
        generator = torch.Generator().manual_seed(0)
        columns = torch.randperm(width, generator=generator)[:sampled].sort().values
        columns = columns.to(rows.device)
        sample_errors = _row_errors(rows[:, columns], target_rows[:, columns], steps, bits)
        bulk = _group_argmin(sample_errors, group_of, groups)[0]
        search = _Search(rows, target_rows, steps, group_of, groups, bits)
        best, best_error = _descend(search, bulk)
        span = torch.arange(SEARCH_WINDOW + 1, device=bulk.device)
        ends = torch.cat([span, points - 1 - span.flip(0)])[:, None].expand(-1, groups)
        end, end_error = _best_of(search, ends)
        wins = (end_error < best_error) | ((end_error == best_error) & (end < best))
        best, best_error = torch.where(wins, end, best), torch.minimum(end_error, best_error)
    else:
        best, best_error = _group_argmin(
            _row_errors(rows, target_rows, steps, bits), group_of, groups
        )
    return torch.where(best_error < torch.inf, alphas.gather(0, best[None])[0], top)
