"""Distribution statistics (METHOD.md sections 1 and 3): kurtosis and the quantized loss."""

import numpy as np
import pytest
import torch
from quant_reference import reference_ql
from torch import nn

from gdrq_bench.quant import (
    CLIP,
    FLOAT,
    QuantSpec,
    kurtosis,
    layer_weight_stats,
    quantize_model,
    quantized_loss,
    set_mode,
)
from gdrq_bench.quant.stats import optimal_quantized_loss

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
    max |x|, is smallest for Laplace and largest for uniform (METHOD.md section 1)."""
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
    qmodel = quantize_model(model, QuantSpec(w_bits=3))
    weight = qmodel[2].weight.detach().double().numpy()
    threshold = 2.0 * np.abs(weight).mean()
    expected = {FLOAT: weight, CLIP: np.clip(weight, -threshold, threshold)}
    for mode, seen in expected.items():
        stats = layer_weight_stats(set_mode(qmodel, mode))
        assert list(stats) == ["0", "2", "3"]
        assert stats["2"]["bits"] == 3.0
        assert stats["2"]["kurtosis"] == pytest.approx(_numpy_kurtosis(seen), rel=1e-6)
        assert stats["2"]["ql2"] <= reference_ql(seen, np.abs(seen).max(), 3)
