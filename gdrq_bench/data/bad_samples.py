"""dataset.on_bad_sample: what an image file that cannot be decoded does to a run.

`fail` (the default) stops the run with one line naming the file. `skip` leaves the sample out
of its batch (a batch left empty is dropped), appends the file and the reason to the run
directory's skipped_samples.txt (one line per encounter, from loader worker processes too) and
the results row's `skipped_samples` counts the distinct files. Only undecodable files are
skipped: a data set whose annotations contradict its files fails under either choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from gdrq_bench.config.errors import DataError

POLICIES = ("fail", "skip")
SKIP_LOG = "skipped_samples.txt"


class UnreadableSample(DataError):
    """An image file that PIL cannot open or decode (corrupt, truncated, not an image)."""


def read_rgb(path: str | Path) -> Image.Image:
    """The decoded RGB image; UnreadableSample naming the file otherwise (a truncated file
    opens, since only its header is read, and fails here when the pixels are decoded)."""
    try:
        with Image.open(path) as file:
            return file.convert("RGB")
    except OSError as error:  # PIL's UnidentifiedImageError and truncation are OSErrors
        raise UnreadableSample(f"cannot read image {path}: {error}") from None


@dataclass(frozen=True)
class BadSamplePolicy:
    mode: str = "fail"
    log: Path | None = None  # None: skip without recording (processes other than rank 0)

    def handle(self, error: UnreadableSample) -> None:
        """Raise under `fail`; record the sample under `skip`."""
        if self.mode != "skip":
            raise UnreadableSample(
                f"{error} (dataset.on_bad_sample=skip leaves such samples out)"
            ) from None
        if self.log is not None:
            with self.log.open("a") as log:  # O_APPEND: whole short lines from any process
                log.write(f"{error}\n")

    def skipped(self) -> int:
        """Distinct samples skipped so far (each may have been met once per epoch)."""
        if self.log is None or not self.log.is_file():
            return 0
        return len(set(self.log.read_text().splitlines()))


class GuardedDataset(Dataset):
    """`dataset` with its unreadable samples handled by `policy`: a skipped sample is None."""

    def __init__(self, dataset: Dataset, policy: BadSamplePolicy) -> None:
        self.dataset, self.policy = dataset, policy

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except UnreadableSample as error:
            self.policy.handle(error)
            return None


class WithoutSkipped:
    """`collate` over the batch's samples that were read; None if none was. A class rather
    than a closure, so loader workers started by spawn can pickle it."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, batch: list[Any]) -> Any:
        kept = [sample for sample in batch if sample is not None]
        return self.collate(kept) if kept else None
