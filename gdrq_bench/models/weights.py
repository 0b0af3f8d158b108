"""Where torchvision's pretrained weights are kept: the run's cache rather than torch's hub."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def torchvision_weights_dir(weights_dir: Path | None) -> Iterator[None]:
    """Builders called inside download to (and reuse) weights_dir/checkpoints/; None leaves
    torch's hub directory as it is."""
    if weights_dir is None:
        yield
        return
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(weights_dir))
    try:
        yield
    finally:
        torch.hub.set_dir(previous)
