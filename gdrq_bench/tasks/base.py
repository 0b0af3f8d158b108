"""The interface the pipeline needs from a task; it never reaches into a task otherwise."""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor, nn
from torch.utils.data import DataLoader


class Task(Protocol):
    name: str  # "classification", ...
    metric: str  # the primary metric's key in evaluate()'s dict, e.g. "top1"

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

    def evaluate(
        self, model: nn.Module, loader: DataLoader, max_batches: int | None = None
    ) -> dict[str, float]:
        """Metrics in percent over the loader (the first max_batches batches if given)."""
