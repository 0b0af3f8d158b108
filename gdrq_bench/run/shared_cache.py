"""What the runs of a grid share through the cache folder (the float model, its scores, the
float control's): the first run computes it under a file lock, the others wait and read it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from filelock import FileLock

from gdrq_bench.training import distributed


def cache_lock(cache: Path) -> AbstractContextManager[object]:
    """A lock on `cache` (a file beside it): parallel jobs of a sweep wait there while the
    first one computes it. The processes of one distributed run compute it together, so they
    take none."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{cache}.lock") if distributed.world_size() == 1 else nullcontext()
