"""Where torchvision's pretrained weights are kept, and how a model trained from scratch's BN
statistics follow its training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

# PyTorch's default. torchvision's MobileNetV3 uses 0.01 (SSDlite 0.03), tuned for long ImageNet
# schedules: after a few hundred steps from scratch its running statistics still lag the
# weights, and LR-ASPP trained on the shapes scenes predicted only background in eval mode.
FROM_SCRATCH_BN_MOMENTUM = 0.1


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


def with_bn_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """`model` with every BatchNorm2d's running-statistics momentum set to `momentum`."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    return model
