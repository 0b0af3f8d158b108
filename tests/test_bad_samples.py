"""dataset.on_bad_sample's parts: the guarded dataset, the record of skips, the collate."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from gdrq_bench.data.bad_samples import (
    BadSamplePolicy,
    GuardedDataset,
    UnreadableSample,
    WithoutSkipped,
    read_rgb,
)


class _Images:
    """Index i is the file files[i], read with read_rgb."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(list(read_rgb(self.files[index]).getpixel((0, 0))))


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    good, garbage, truncated = (tmp_path / name for name in ("good.png", "bad.png", "cut.png"))
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    garbage.write_bytes(b"no image")
    Image.effect_noise((64, 64), 50).convert("RGB").save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    return [good, garbage, truncated]


def test_fail_names_the_file_and_the_way_out(files: list[Path]) -> None:
    dataset = GuardedDataset(_Images(files), BadSamplePolicy("fail"))
    assert dataset[0].tolist() == [1, 2, 3]
    for index in (1, 2):
        with pytest.raises(UnreadableSample, match=rf"{files[index]}.*on_bad_sample=skip"):
            dataset[index]


def test_skip_gives_none_and_counts_distinct_files(files: list[Path], tmp_path: Path) -> None:
    policy = BadSamplePolicy("skip", tmp_path / "skipped.txt")
    dataset = GuardedDataset(_Images(files), policy)
    for _epoch in range(2):  # met twice, counted once
        assert [dataset[i] is None for i in range(3)] == [False, True, True]
    assert policy.skipped() == 2
    assert len((tmp_path / "skipped.txt").read_text().splitlines()) == 4


def test_collate_drops_skipped_samples_and_empty_batches() -> None:
    collate = pickle.loads(pickle.dumps(WithoutSkipped(default_collate)))
    batch = collate([torch.ones(2), None, torch.zeros(2)])
    assert batch.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert collate([None, None]) is None
