"""method=brevitas: Brevitas' layers through the method hook (needs the bench extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_runner import assert_failed_cleanly, gdrq_run, read_rows
from torch import nn

pytest.importorskip("brevitas", reason="Brevitas is in the bench extra")


def test_brevitas_copy_quantizes_every_layer_input_as_gdrq_run_does() -> None:
    from brevitas import nn as qnn

    from gdrq_bench.models.classifiers import build_classifier
    from gdrq_bench.quant import QuantScope, QuantSpec
    from gdrq_bench.quant.brevitas import brevitas_model

    torch.manual_seed(0)
    model = build_classifier("mobilenet_v2_cifar", 10, pretrained=False).eval()
    images = torch.randn(8, 3, 32, 32)
    spec = QuantSpec(method="brevitas", w_bits=2, a_bits=4)
    qmodel = brevitas_model(model, spec, QuantScope(), [images])  # calibrated on the images
    layers = [m for m in qmodel.modules() if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    assert len(layers) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    bits = [int(layer.quant_weight().bit_width) for layer in layers]
    assert bits[0] == bits[-1] == 8 and set(bits[1:-1]) == {2}
    inputs = [m for m in qmodel.modules() if isinstance(m, qnn.QuantIdentity)]
    assert len(inputs) == len(layers)
    signed = [bool(m.act_quant.is_signed) for m in inputs]
    assert signed[0]  # the normalised image
    assert any(signed[1:]) and not all(signed[1:])  # linear bottlenecks signed, ReLU6 outputs not
    with torch.no_grad():
        assert qmodel.eval()(images).shape == (8, 10)
    assert not any(isinstance(m, qnn.QuantIdentity) for m in model.modules())  # untouched


@pytest.mark.slow
def test_gdrq_run_method_brevitas_writes_a_row_of_the_quantized_model(tmp_path: Path) -> None:
    result = gdrq_run(tmp_path, tmp_path / "cache", "logger=none", "method=brevitas", "bits=w2a4")
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(tmp_path)
    assert (row["method"], row["w_bits"], row["a_bits"], row["first_last_bits"]) == (
        "brevitas",
        "2",
        "4",
        "8",
    )
    assert row["groups"] == "per_channel" and row["folded"] == row["fold_err"] == ""
    assert row["k_w"] == row["group_strategy"] == row["weight_grad"] == ""
    assert float(row["drop"]) == pytest.approx(float(row["fp"]) - float(row["quant"]), abs=1e-3)


def test_method_brevitas_quantizes_classification_models_only(tmp_path: Path) -> None:
    result = gdrq_run(
        tmp_path, tmp_path / "cache", "logger=none", "method=brevitas", "task=detection"
    )
    assert_failed_cleanly(result, tmp_path, "detection", "method=brevitas quantizes classification")
