"""The task base: what a run needs from a task, and what every task does the same way (its
loaders, weights directory, bad-sample policy and evaluation mode). The run never reaches into
a task otherwise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.config.schema import DatasetConfig, ModelConfig, TaskConfig, TrainerConfig
from gdrq_bench.data.bad_samples import BadSamplePolicy
from gdrq_bench.quant import QuantScope
from gdrq_bench.tasks.common import make_loader


class Task(ABC):
    name: ClassVar[str]  # task.name: "classification", ...
    dataset_schema: ClassVar[type[DatasetConfig]]  # the schema its dataset= presets extend
    # batch list -> batch; images of different sizes stay a list (detection)
    collate: ClassVar[Callable[[list[Any]], Any]] = staticmethod(default_collate)
    metric: str  # the primary metric's key in evaluate()'s dict, e.g. "top1"
    quant_scope: QuantScope  # the part of the model quantized and its prediction layers
    # model.pretrained=true gives a finished float model (every weight pretrained, so no float
    # training); False where only the backbone is (detection, segmentation, a swapped head)
    pretrained_complete: bool = False
    train_set: Dataset
    eval_set: Dataset
    # dataset.holdout's images, left out of train_set and seen as evaluation images (None: none)
    holdout_set: Dataset | None = None

    def __init__(
        self,
        task: TaskConfig,
        dataset: DatasetConfig,
        model: ModelConfig,
        trainer: TrainerConfig,
        cache_dir: str,
        bad_samples: BadSamplePolicy,
    ) -> None:
        self.task_config, self.dataset_config = task, dataset
        self.model_config, self.trainer_config = model, trainer
        self.bad_samples = bad_samples  # what an unreadable image does; counts the skipped ones
        self.weights_dir = Path(cache_dir).expanduser() / "torchvision"  # pretrained weights
        self.setup(cache_dir)
        if dataset.holdout and self.holdout_set is None:
            raise ConfigError(
                f"dataset.holdout={dataset.holdout}: task={self.name} holds out no images "
                "(its setup makes no held-out set); use dataset.holdout=0"
            )

    @abstractmethod
    def setup(self, cache_dir: str) -> None:
        """The task's own part of construction: check its keys, load its data sets (cached
        under cache_dir where a data set unpacks), set its metric and quantization scope."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The float model: pretrained weights if configured, otherwise freshly initialised."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The training loss of one batch (model already in train mode)."""

    @abstractmethod
    def evaluate(
        self, model: nn.Module, loader: DataLoader, predictions_path: Path | None = None
    ) -> dict[str, float]:
        """Metrics in percent over the loader (the run's loader already holds
        trainer.max_eval_batches' subset); a task with per-image predictions writes them to
        predictions_path when given."""

    def train_loader(self) -> DataLoader:
        """Shuffled training batches (the seed is set by the caller)."""
        return self._loader(self.train_set, self.trainer_config.batch_size, shuffle=True)

    def eval_loader(self) -> DataLoader:
        """Deterministic evaluation batches (a seeded subset under trainer.max_eval_batches)."""
        trainer = self.trainer_config
        return self._loader(
            self.eval_set, trainer.eval_batch_size, shuffle=False, subset=trainer.max_eval_batches
        )

    def holdout_loader(self) -> DataLoader | None:
        """The held-out validation images (dataset.holdout), as eval_loader gives its own;
        None without them."""
        if self.holdout_set is None:
            return None
        trainer = self.trainer_config
        return self._loader(
            self.holdout_set,
            trainer.eval_batch_size,
            shuffle=False,
            subset=trainer.max_eval_batches,
        )

    def model_inputs(self, batch: Any) -> Any:
        """What `model(...)` takes from a batch, for checking the BN fold."""
        return batch[0]

    def fold_probe(self, model: nn.Module) -> nn.Module:
        """The view of `model` whose outputs prove the BN fold: continuous in the weights
        (a classifier's logits; a detector's head outputs before NMS)."""
        return model

    @contextmanager
    def evaluating(self, model: nn.Module) -> Iterator[None]:
        """`model` in eval mode without gradients for the block; its mode is restored after."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(was_training)

    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, subset: int | None = None
    ) -> DataLoader:
        workers = self.dataset_config.num_workers
        return make_loader(
            dataset, batch_size, shuffle, workers, self.bad_samples, self.collate, subset
        )
