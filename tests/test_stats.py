"""Distribution statistics (docs/method.md sections 1 and 3): kurtosis and the quantized loss."""

import numpy as np
import pytest
import torch
from quant_reference import reference_ql, reference_quantize
from torch import nn

from gdrq_bench.quant import (
    CLIP,
    FLOAT,
    QuantSpec,
    kurtosis,
    layer_weight_stats,
    quantize_model,
    quantized_loss,
    recording_activation_clips,
    set_mode,
)
from gdrq_bench.quant.scale_clip import weight_threshold
from gdrq_bench.quant.stats import clip_statistics, optimal_quantized_loss

SAMPLES = {
    "gaussian": lambda rng, n: rng.normal(0.0, 1.0, n),
    "laplace": lambda rng, n: rng.laplace(0.0, 1.0, n),
    "uniform": lambda rng, n: rng.uniform(-1.0, 1.0, n),
}


def _numpy_kurtosis(x: np.ndarray) -> float:
    centred = x - x.mean()
    return float((centred**4).mean() / (centred**2).mean() ** 2)


@pytest.mark.parametrize(("distribution", "expected"), [("gaussian", 3.0), ("uniform", 1.8)])
def test_kurtosis_of_large_samples(distribution, expected):
    sample = SAMPLES[distribution](np.random.default_rng(0), 1_000_000)
    assert kurtosis(torch.from_numpy(sample).float()) == pytest.approx(expected, abs=0.02)


def test_kurtosis_matches_the_numpy_formula():
    sample = np.random.default_rng(1).gamma(2.0, 1.0, (40, 50))
    assert kurtosis(torch.from_numpy(sample)) == pytest.approx(_numpy_kurtosis(sample), rel=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_loss_matches_the_formula(bits, p):
    x = np.random.default_rng(bits).normal(0.0, 0.1, (16, 9))
    expected = reference_ql(x, 0.17, bits, p)
    assert quantized_loss(torch.from_numpy(x).float(), 0.17, bits, p) == pytest.approx(
        expected, rel=1e-5
    )


def test_optimal_loss_orders_the_distributions_as_the_paper_says():
    """At the best clip, QL_2 is Laplace > Gaussian > uniform; the clip, as a fraction of
    max |x|, is smallest for Laplace and largest for uniform (docs/method.md section 1)."""
    rng = np.random.default_rng(0)
    losses, fractions = [], []
    for name in ("laplace", "gaussian", "uniform"):
        sample = SAMPLES[name](rng, 20_000)
        loss, alpha = optimal_quantized_loss(torch.from_numpy(sample), bits=4)
        assert loss == pytest.approx(reference_ql(sample, alpha, 4), rel=1e-9)
        losses.append(loss)
        fractions.append(alpha / np.abs(sample).max())
    assert losses[0] > losses[1] > losses[2]
    assert fractions[0] < fractions[1] < fractions[2]


def test_layer_weight_stats_read_the_weight_each_mode_sees():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Linear(14, 4))
    qmodel = quantize_model(model, QuantSpec(w_bits=3, k_w=2.0))
    weight = qmodel[2].weight.detach().double().numpy()
    threshold = 2.0 * np.abs(weight).mean()
    expected = {FLOAT: weight, CLIP: np.clip(weight, -threshold, threshold)}
    for mode, seen in expected.items():
        stats = layer_weight_stats(set_mode(qmodel, mode))
        assert list(stats) == ["0", "2", "3"]
        assert stats["2"]["bits"] == 3.0
        assert stats["2"]["kurtosis"] == pytest.approx(_numpy_kurtosis(seen), rel=1e-6)
        at_max = reference_quantize(seen, 3, np.abs(seen).max())  # one clip of the grid
        assert stats["2"]["ql2"] <= np.linalg.norm(weight - at_max) / np.linalg.norm(weight)


def test_clip_statistics_match_the_formulas():
    rng = np.random.default_rng(3)
    stored = rng.normal(0.0, 1.0, (32, 9))
    threshold = 1.2
    clipped = np.clip(stored, -threshold, threshold)
    stats = clip_statistics(torch.from_numpy(stored), torch.from_numpy(clipped))
    assert stats["clipped"] == pytest.approx(np.mean(np.abs(stored) > threshold), rel=1e-12)
    expected_l2 = np.linalg.norm(stored - clipped) / np.linalg.norm(stored)
    assert stats["clip_l2"] == pytest.approx(expected_l2, rel=1e-12)


def test_layer_stats_measure_the_clip_against_the_stored_weights():
    """After reshaping, QL_2 counts Scale-Clip's own error: ||W - Q(clip(W))|| / ||W|| at
    the best per-tensor clip of the grid, never ||clip(W) - Q(clip(W))|| / ||clip(W)||."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Linear(14, 4))
    nn.init.normal_(model[2].weight)  # Gaussian: k_w=2 clips about a tenth of it
    qmodel = set_mode(quantize_model(model, QuantSpec(w_bits=3, k_w=2.0)), CLIP)
    stored = qmodel[2].weight.detach().double().numpy()
    threshold = weight_threshold(qmodel[2].weight, 2.0).item()  # in float32, as the layer
    clipped = np.clip(stored, -threshold, threshold)
    top = np.abs(clipped).max()
    expected_ql = min(
        np.linalg.norm(stored - reference_quantize(clipped, 3, f * top)) / np.linalg.norm(stored)
        for f in np.linspace(1 / 64, 1, 64)
    )
    stats = layer_weight_stats(qmodel)["2"]
    assert stats["ql2"] == pytest.approx(expected_ql, rel=1e-6)
    assert stats["clipped"] == pytest.approx(np.mean(np.abs(stored) > threshold), rel=1e-12)
    expected_l2 = np.linalg.norm(stored - clipped) / np.linalg.norm(stored)
    assert stats["clip_l2"] == pytest.approx(expected_l2, rel=1e-6)
    assert "ql2_quantizer" not in stats  # no rounding in clip mode


def test_layer_stats_in_quant_mode_measure_the_quantizer_itself():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Linear(6, 4))
    qmodel = quantize_model(model, QuantSpec(method="minmax", w_bits=4)).eval()
    stored = qmodel[2].weight.detach().double().numpy()
    stats = layer_weight_stats(qmodel)["2"]
    quantized = reference_quantize(stored, 4, np.abs(stored).max())
    expected = np.linalg.norm(stored - quantized) / np.linalg.norm(stored)
    assert stats["ql2_quantizer"] == pytest.approx(expected, rel=1e-6)
    assert stats["clipped"] == 0.0 and stats["clip_l2"] == 0.0  # min-max clips nothing


def test_activation_clip_recording_matches_the_formulas():
    """Fraction of a layer's input values beyond its clip, and the share of sum(x^2) cut."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Linear(6, 4))
    qmodel = quantize_model(
        model, QuantSpec(w_bits=4, a_bits=4, k_a=1.5, act_stat="mean_abs")
    ).train()
    batches = [torch.randn(4, 3, 10, 10) for _ in range(3)]
    qmodel(batches[0])  # the clips observe one training batch
    qmodel.eval()
    inputs = []
    hook = qmodel[2].register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach()))
    with recording_activation_clips(qmodel) as clips:
        for batch in batches:
            qmodel(batch)
    hook.remove()
    x = torch.cat([i.flatten() for i in inputs]).double().numpy()
    alpha = qmodel[2].input_quantizer.frozen_alpha().item()
    assert alpha == pytest.approx(1.5 * qmodel[2].input_quantizer.running_stat.item())
    cut = x - np.clip(x, 0.0, alpha)
    assert set(clips) == {"0", "2", "3"}
    assert clips["2"]["act_clipped"] == pytest.approx(np.mean(x > alpha), rel=1e-12)
    expected_energy = (cut**2).sum() / (x**2).sum()
    assert clips["2"]["act_clipped_energy"] == pytest.approx(expected_energy, rel=1e-6)
    assert 0 < clips["2"]["act_clipped"] < 1
