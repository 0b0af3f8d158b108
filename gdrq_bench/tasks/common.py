"""Helpers the tasks share: the loader factory, evaluation batches, batches and models on a
device, predictions written atomically."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from tqdm import tqdm

from gdrq_bench.data.bad_samples import BadSamplePolicy, GuardedDataset, WithoutSkipped
from gdrq_bench.training import distributed

# Seeds the evaluation subset of trainer.max_eval_batches: the same for every model and run.
EVAL_SUBSET_SEED = 0


def evaluation_subset(dataset: Dataset, batches: int | None, batch_size: int) -> Dataset:
    """`batches` batches' worth of samples drawn at random (seeded) from `dataset`, in the data
    set's order; the whole data set when `batches` is None or covers it. The first batches of
    a data set sorted by class (ImageFolder's order) would score one or two classes."""
    count = len(dataset) if batches is None else min(len(dataset), batches * batch_size)
    if count == len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(EVAL_SUBSET_SEED)
    chosen = torch.randperm(len(dataset), generator=generator)[:count].sort().values
    return Subset(dataset, chosen.tolist())


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    bad_samples: BadSamplePolicy,
    collate_fn: Callable[[list[Any]], Any] = default_collate,
    subset_batches: int | None = None,
) -> DataLoader:
    """A shuffled loader draws its order from the stage's seed (the caller seeds torch); in a
    distributed run each process shuffles its own share of the data. `subset_batches` (an
    evaluation loader under trainer.max_eval_batches) keeps a seeded random subset of that
    many batches (evaluation_subset). Unreadable samples are handled by `bad_samples`; a
    batch whose samples were all skipped comes out as None."""
    dataset = evaluation_subset(dataset, subset_batches, batch_size)
    sampler = distributed.train_sampler(dataset, torch.initial_seed()) if shuffle else None
    generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
    return DataLoader(
        GuardedDataset(dataset, bad_samples),
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=WithoutSkipped(collate_fn),
        generator=generator,
    )


def eval_batches(loader: DataLoader, progress: bool) -> Iterator[Any]:
    """The loader's batches that hold a sample, with a progress bar."""
    shown = tqdm(loader, "eval", len(loader), leave=False, disable=not progress)
    return (batch for batch in shown if batch is not None)


def pair_to_device(batch: Any, model: nn.Module) -> tuple[Tensor, Tensor]:
    """An (inputs, targets) batch of two tensors on the model's device."""
    device = device_of(model)
    inputs, targets = batch
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` atomically (a reader never sees half a file)."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives (CPU for a model without parameters or buffers)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next(tensors, torch.empty(0)).device
