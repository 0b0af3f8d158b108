"""data/memo.py: evaluation images are read once per run where they fit in memory."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.utils.data import Dataset

from gdrq_bench.data import memo
from gdrq_bench.data.memo import MemoizedDataset, memoized


class CountingImages(Dataset):
    """Images of `side` x `side` that count their reads."""

    classes: ClassVar[list[str]] = ["a", "b"]

    def __init__(self, count: int, side: int) -> None:
        self.count, self.side, self.reads = count, side, 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return torch.full((3, self.side, self.side), float(index)), index % 2


def test_each_image_is_read_once_and_the_data_set_keeps_its_attributes() -> None:
    images = CountingImages(10, 4)
    kept = memoized(images, num_workers=0)
    assert isinstance(kept, MemoizedDataset) and kept.classes == ["a", "b"]
    first = [kept[i] for i in range(10)]
    second = [kept[i] for i in range(10)]
    assert images.reads == 10 and len(kept) == 10
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, second))


def test_a_data_set_read_by_workers_or_too_large_is_not_kept(monkeypatch) -> None:
    assert memoized(CountingImages(10, 4), num_workers=2).__class__ is CountingImages
    monkeypatch.setattr(memo, "MEMO_LIMIT_BYTES", 10 * 3 * 4 * 4 * 4 - 1)
    assert memoized(CountingImages(10, 4), num_workers=0).__class__ is CountingImages
