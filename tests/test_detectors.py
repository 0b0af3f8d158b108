"""Detectors under quantization: what each task.quantize scope covers, the prediction layers at
the first/last bit width, and the BN fold proved on raw head outputs in float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gdrq_bench.config.errors import ConfigError
from gdrq_bench.models.detectors import LAYOUTS, RawDetectorOutputs, build_detector, check_detector
from gdrq_bench.quant import QuantSpec, fold_model, quantize_model, quantized_layers, verify_fold

SIZE = 64
W4A4 = QuantSpec(w_bits=4, a_bits=4, groups=4)


def _detector(detector: str, backbone: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_detector(detector, backbone, 4, SIZE, pretrained=False, weights_dir=Path("-"))


def _images(count: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(3, SIZE, SIZE, generator=generator) for _ in range(count)]


@pytest.mark.parametrize(
    ("detector", "backbone"),
    [
        ("retinanet", "resnet18"),
        ("faster_rcnn", "resnet18"),
        ("faster_rcnn", "mobilenet_v3_large"),
        ("ssdlite", "mobilenet_v3_large"),
    ],
)
def test_fold_is_exact_on_raw_detector_outputs_at_w4a4(detector: str, backbone: str) -> None:
    qmodel = quantize_model(_detector(detector, backbone), W4A4, LAYOUTS[detector].scope("all"))
    probe = RawDetectorOutputs(qmodel)
    with torch.no_grad():  # train-mode passes calibrate BN statistics and activation clips
        for _ in range(2):
            probe.train()(_images())
    probe.eval()
    folded = fold_model(probe)
    check = verify_fold(probe, folded, [_images()])
    assert check["max_rel"] <= 1e-6
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


@pytest.mark.parametrize(
    ("quantize", "prefixes"),
    [
        ("backbone", ("backbone.body.",)),
        ("backbone_fpn", ("backbone.body.", "backbone.fpn.")),
        ("all", ("backbone.body.", "backbone.fpn.", "head.")),
    ],
)
def test_scope_quantizes_exactly_its_parts(quantize: str, prefixes: tuple[str, ...]) -> None:
    model = _detector("retinanet", "resnet18")
    qmodel = quantize_model(model, W4A4, LAYOUTS["retinanet"].scope(quantize))
    names = [name for name, _ in quantized_layers(qmodel)]
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert names == [n for n in convs if n.startswith(prefixes)]


def test_prediction_layers_and_the_stem_run_at_8_bits() -> None:
    qmodel = quantize_model(
        _detector("retinanet", "resnet18"), W4A4, LAYOUTS["retinanet"].scope("all")
    )
    bits = {name: layer.weight_quantizer.bits for name, layer in quantized_layers(qmodel)}
    eight = {name for name, b in bits.items() if b == 8}
    assert eight == {
        "backbone.body.conv1",
        "head.classification_head.cls_logits",
        "head.regression_head.bbox_reg",
    }
    assert set(bits.values()) == {4, 8}


def test_narrow_rpn_objectness_gets_one_group_per_filter() -> None:
    """A prediction layer with fewer filters than groups (3 anchors) takes one group per
    filter; the same layer outside the task's prediction layers would be refused."""
    model = _detector("faster_rcnn", "resnet18")
    qmodel = quantize_model(model, W4A4, LAYOUTS["faster_rcnn"].scope("all"))
    assert qmodel.rpn.head.cls_logits.weight_quantizer.groups == 3
    with pytest.raises(ValueError, match=r"filters of layer rpn\.head\.cls_logits"):
        quantize_model(model, W4A4)


@pytest.mark.parametrize(
    ("detector", "backbone", "quantize", "key"),
    [
        ("yolo", "resnet18", "all", "task.detector"),
        ("ssdlite", "resnet50", "all", "model.name"),
        ("retinanet", "mobilenet_v3_large", "all", "model.name"),
        ("retinanet", "resnet18", "heads", "task.quantize"),
    ],
)
def test_bad_detector_choices_name_the_key(
    detector: str, backbone: str, quantize: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}="):
        check_detector(detector, backbone, quantize)
