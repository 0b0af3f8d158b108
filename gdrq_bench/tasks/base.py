"""The interface the pipeline needs from a task; it never reaches into a task otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn
from torch.utils.data import DataLoader

from gdrq_bench.data.bad_samples import BadSamplePolicy
from gdrq_bench.quant import QuantScope


class Task(Protocol):
    name: str  # "classification", ...
    metric: str  # the primary metric's key in evaluate()'s dict, e.g. "top1"
    quant_scope: QuantScope  # the part of the model quantized and its prediction layers
    # model.pretrained=true gives a finished float model (every weight pretrained, so no float
    # training); False where only the backbone is (detection, segmentation, a swapped head)
    pretrained_complete: bool
    bad_samples: BadSamplePolicy  # what an unreadable image does; counts the skipped ones

    def build_model(self) -> nn.Module:
        """The float model: pretrained weights if configured, otherwise freshly initialised."""

    def train_loader(self) -> DataLoader:
        """Shuffled training batches (the seed is set by the caller)."""

    def eval_loader(self) -> DataLoader:
        """Deterministic evaluation batches."""

    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The training loss of one batch (model already in train mode)."""

    def model_inputs(self, batch: Any) -> Any:
        """What `model(...)` takes from a batch, for checking the BN fold."""

    def fold_probe(self, model: nn.Module) -> nn.Module:
        """The view of `model` whose outputs prove the BN fold: continuous in the weights
        (a classifier's logits; a detector's head outputs before NMS)."""

    def evaluate(
        self,
        model: nn.Module,
        loader: DataLoader,
        max_batches: int | None = None,
        predictions_path: Path | None = None,
    ) -> dict[str, float]:
        """Metrics in percent over the loader (the first max_batches batches if given); a task
        with per-image predictions writes them to predictions_path when given."""
