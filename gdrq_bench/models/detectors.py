"""Torchvision detectors by name (RetinaNet, Faster R-CNN, SSDlite) on a named backbone, with
the layout the quantizer needs: which layers are backbone / neck / prediction outputs, and a
view of the raw head outputs for proving the BN fold (the final detections pass NMS and a
score threshold, so a 1e-15 change can swap a box; the raw outputs cannot hide anything)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision import models
from torchvision.models import WeightsEnum
from torchvision.models.detection import (
    FasterRCNN,
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_fpn,
    ssdlite320_mobilenet_v3_large,
)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from gdrq_bench.config.errors import check_choice
from gdrq_bench.models.weights import (
    FROM_SCRATCH_BN_MOMENTUM,
    torchvision_weights_dir,
    with_bn_momentum,
)
from gdrq_bench.quant import QuantScope

RESNETS = ("resnet18", "resnet34", "resnet50")
BACKBONES = {
    "retinanet": RESNETS,
    "faster_rcnn": (*RESNETS, "mobilenet_v3_large"),
    "ssdlite": ("mobilenet_v3_large",),
}
SCOPES = ("backbone", "backbone_fpn", "all")


@dataclass(frozen=True)
class DetectorLayout:
    """Module-name prefixes of a detector's parts and fnmatch patterns of its prediction
    layers (quantized at the first/last-layer bit width, like a classifier's last layer)."""

    body: str
    neck: str
    outputs: tuple[str, ...]

    def scope(self, quantize: str) -> QuantScope:
        """What task.quantize (backbone | backbone_fpn | all) covers."""
        include = {"backbone": (self.body,), "backbone_fpn": (self.body, self.neck)}
        return QuantScope(include.get(quantize), self.outputs)


LAYOUTS = {
    "retinanet": DetectorLayout(
        "backbone.body",
        "backbone.fpn",
        ("head.classification_head.cls_logits", "head.regression_head.bbox_reg"),
    ),
    "faster_rcnn": DetectorLayout(
        "backbone.body",
        "backbone.fpn",
        ("rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box_predictor.*"),
    ),
    "ssdlite": DetectorLayout(
        "backbone.features",
        "backbone.extra",
        ("head.classification_head.module_list.*.1", "head.regression_head.module_list.*.1"),
    ),
}


def check_detector(detector: str, backbone: str, quantize: str) -> None:
    """Raise the ConfigError build_detector would, without building anything."""
    check_choice("task.detector", detector, list(BACKBONES))
    check_choice("model.name", backbone, BACKBONES[detector], f"a {detector} backbone")
    check_choice("task.quantize", quantize, SCOPES)


def build_detector(
    detector: str,
    backbone: str,
    num_classes: int,
    image_size: int,
    pretrained: bool,
    weights_dir: Path,
) -> nn.Module:
    """A detector whose transform resizes to image_size (torchvision's 800 px is for COCO).

    pretrained loads torchvision's ImageNet weights into the backbone and, as torchvision does
    then, freezes its BatchNorms (FrozenBatchNorm2d) and its first layers; from scratch every
    layer trains with ordinary BatchNorm at PyTorch's default momentum (see with_bn_momentum).
    num_classes counts the background (label 0).
    """
    check_detector(detector, backbone, "all")
    weights = models.get_model_weights(backbone).DEFAULT if pretrained else None
    with torchvision_weights_dir(weights_dir, weights):
        model = _build(detector, backbone, num_classes, image_size, weights)
    return model if pretrained else with_bn_momentum(model, FROM_SCRATCH_BN_MOMENTUM)


def _build(
    detector: str, backbone: str, num_classes: int, image_size: int, weights: WeightsEnum | None
) -> nn.Module:
    size = {"min_size": image_size, "max_size": image_size}
    if detector == "ssdlite":
        model = ssdlite320_mobilenet_v3_large(num_classes=num_classes, weights_backbone=weights)
        model.transform = GeneralizedRCNNTransform(
            image_size, image_size, [0.5] * 3, [0.5] * 3, size_divisible=1,
            fixed_size=(image_size, image_size),
        )  # fmt: skip
        return model
    if backbone == "mobilenet_v3_large":
        return fasterrcnn_mobilenet_v3_large_fpn(
            num_classes=num_classes, weights_backbone=weights, **size
        )
    norm = nn.BatchNorm2d if weights is None else FrozenBatchNorm2d
    trainable = 5 if weights is None else 3
    if detector == "retinanet":
        features = resnet_fpn_backbone(
            backbone_name=backbone, weights=weights, norm_layer=norm,
            trainable_layers=trainable, returned_layers=[2, 3, 4],
            extra_blocks=LastLevelP6P7(256, 256),
        )  # fmt: skip
        return RetinaNet(features, num_classes, **size)
    features = resnet_fpn_backbone(
        backbone_name=backbone, weights=weights, norm_layer=norm, trainable_layers=trainable
    )
    return FasterRCNN(features, num_classes, **size)


class RawDetectorOutputs(nn.Module):
    """The detector up to its head outputs, before box decoding, thresholds and NMS.

    Faster R-CNN's box head is run on a fixed grid of proposals, so both models see the same
    boxes rather than each its own RPN's (which NMS makes discontinuous).
    """

    GRID = 4  # proposals per image: GRID x GRID cells

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        model = self.detector
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        levels = list(features.values())
        if isinstance(model, (RetinaNet, SSD)):
            return [*levels, *model.head(levels).values()]
        if not isinstance(model, FasterRCNN):
            raise TypeError(f"no raw-output view for {type(model).__name__}")
        objectness, deltas = model.rpn.head(levels)
        proposals = [self._grid(h, w, levels[0]) for h, w in image_list.image_sizes]
        heads = model.roi_heads
        pooled = heads.box_roi_pool(features, proposals, image_list.image_sizes)
        logits, regression = heads.box_predictor(heads.box_head(pooled))
        return [*levels, *objectness, *deltas, logits, regression]

    def _grid(self, height: int, width: int, like: Tensor) -> Tensor:
        """GRID x GRID boxes of two cells' side, clipped to the image."""
        steps = torch.arange(self.GRID, dtype=like.dtype, device=like.device) / self.GRID
        y, x = torch.meshgrid(steps * height, steps * width, indexing="ij")
        x2 = (x + 2 * width / self.GRID).clamp(max=width)
        y2 = (y + 2 * height / self.GRID).clamp(max=height)
        return torch.stack([x, y, x2, y2], dim=-1).reshape(-1, 4)
