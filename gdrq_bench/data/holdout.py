"""A validation split held out of the training set (`dataset.holdout=N`): N training images,
stratified by class, drawn with a fixed seed, so knobs and recipes are chosen on images that
neither train the model nor report its score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from gdrq_bench.config.errors import ConfigError

HOLDOUT_SEED = 0  # the same held-out images for every run, model and method


def holdout_indices(labels: Sequence[int], count: int) -> tuple[list[int], list[int]]:
    """(kept, held out) indices of a training set with these labels: `count` held out, each
    class in proportion to its share (largest remainders), drawn with HOLDOUT_SEED; both
    sorted."""
    labels = np.asarray(labels)
    if not 0 < count < len(labels):
        raise ConfigError(
            f"dataset.holdout={count}: must be between 1 and the training set's size - 1 "
            f"({len(labels) - 1})"
        )
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * count / len(labels)
    per_class = np.floor(quotas).astype(int)
    remainders = np.argsort(-(quotas - per_class), kind="stable")
    per_class[remainders[: count - per_class.sum()]] += 1
    rng = np.random.default_rng(HOLDOUT_SEED)
    held = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == label))[:take]
            for label, take in zip(classes, per_class, strict=True)
        ]
    )
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept.tolist(), np.sort(held).tolist()


def split_holdout(
    train: Dataset, train_seen_as_eval: Dataset, labels: Sequence[int], count: int
) -> tuple[Dataset, Dataset]:
    """(training images left, held-out images): the held-out ones from `train_seen_as_eval`,
    the same images under the evaluation transforms."""
    kept, held = holdout_indices(labels, count)
    return Subset(train, kept), Subset(train_seen_as_eval, held)
