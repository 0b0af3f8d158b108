"""Evaluation images kept in memory after their first read.

A run scores its evaluation set three times or more (float, quantized, folded, each again on
the held-out images) and checks the fold on its first batch; the evaluation transforms draw
nothing at random, so every pass reads the same tensors. On Fashion-MNIST (10,000 images,
PIL per image) a pass spent about 8 of its 20 s decoding and transforming. A data set is kept
only where its loader reads it in this process (dataset.num_workers=0) and all of its items,
estimated from the first, fit in MEMO_LIMIT_BYTES.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

MEMO_LIMIT_BYTES = 1 << 30


class MemoizedDataset(Dataset):
    """`dataset` whose items are kept after their first read (one that raises is not); its
    other attributes (classes, targets, ...) are the data set's."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "items"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        if index not in self.items:
            self.items[index] = self.dataset[index]
        return self.items[index]


def _bytes(item: Any) -> int:
    if isinstance(item, Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, (list, tuple)):
        return sum(_bytes(part) for part in item)
    return 8


def memoized(dataset: Dataset, num_workers: int) -> Dataset:
    """`dataset`, kept in memory after its first read where the module docstring allows."""
    size = len(dataset)  # type: ignore[arg-type]
    if num_workers or not size:
        return dataset
    memo = MemoizedDataset(dataset)
    try:
        first = memo[0]
    except Exception:  # an unreadable first image: the loader's bad-sample guard says what
        return dataset
    return memo if _bytes(first) * size <= MEMO_LIMIT_BYTES else dataset
