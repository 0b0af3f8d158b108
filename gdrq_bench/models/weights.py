"""Where torchvision's pretrained weights are kept, and how a model trained from scratch's BN
statistics follow its training."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum

from gdrq_bench.config.errors import ConfigError

# PyTorch's default. torchvision's MobileNetV3 uses 0.01 (SSDlite 0.03), tuned for long ImageNet
# schedules: after a few hundred steps from scratch its running statistics still lag the
# weights, and LR-ASPP trained on the shapes scenes predicted only background in eval mode.
FROM_SCRATCH_BN_MOMENTUM = 0.1


@contextmanager
def torchvision_weights_dir(
    weights_dir: Path | None, weights: WeightsEnum | None = None
) -> Iterator[None]:
    """Builders called inside read torchvision's `weights` from, or download them to,
    weights_dir/checkpoints/ (None: torch's own hub cache). A file that only torch's own hub
    cache ($TORCH_HOME/hub/checkpoints) holds is read from there. A file found in neither that
    cannot be downloaded (a machine without network) is one ConfigError naming the file and
    both places, rather than urllib's traceback."""
    if weights is None:
        yield
        return
    file = Path(urlparse(weights.url).path).name
    torch_cache = Path(torch.hub.get_dir()) / "checkpoints"
    ours = None if weights_dir is None else Path(weights_dir) / "checkpoints"
    use_ours = ours is not None and ((ours / file).is_file() or not (torch_cache / file).is_file())
    previous = torch.hub.get_dir()
    if use_ours:
        torch.hub.set_dir(str(weights_dir))
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.hub's "Downloading: ..." line
            yield
    except OSError as error:  # urllib's URLError and socket errors are OSErrors
        places = " nor in ".join(
            str(place) for place in dict.fromkeys([ours, torch_cache]) if place
        )
        reason = str(getattr(error, "reason", error)).strip()
        raise ConfigError(
            f"model.pretrained=true: torchvision's weights file {file} is neither in {places} "
            f"(torch's hub cache, $TORCH_HOME) and could not be downloaded ({reason}); copy it "
            f"into one of them"
        ) from None
    finally:
        torch.hub.set_dir(previous)


def with_bn_momentum(model: nn.Module, momentum: float) -> nn.Module:
    """`model` with every BatchNorm2d's running-statistics momentum set to `momentum`."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
    return model
