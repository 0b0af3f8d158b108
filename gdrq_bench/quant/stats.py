"""Distribution statistics: kurtosis, the quantized loss QL_p, histograms (METHOD.md 1, 3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gdrq_bench.quant.fake_quant import fake_quantize
from gdrq_bench.quant.groups import search_group_alpha


def kurtosis(x: Tensor) -> float:
    """E[(x - mu)^4] / var^2 (Pearson's; a Gaussian gives 3, a uniform 1.8)."""
    x = x.detach().double().flatten()
    centred = x - x.mean()
    variance = centred.square().mean()
    return float(centred.pow(4).mean() / variance.square())


def quantized_loss(x: Tensor, alpha: Tensor | float, bits: int, p: float = 2.0) -> float:
    """QL_p = ||x - Q(x; alpha)||_p / ||x||_p on the signed grid."""
    x = x.detach().double()
    error = x - fake_quantize(x, bits, torch.as_tensor(alpha, dtype=x.dtype), signed=True)
    return float(torch.linalg.vector_norm(error, p) / torch.linalg.vector_norm(x, p))


def optimal_quantized_loss(x: Tensor, bits: int, points: int = 64) -> tuple[float, float]:
    """(min QL_2 over the clip grid, the clip that reaches it), per tensor."""
    flat = x.detach().double().reshape(1, -1)
    alpha = search_group_alpha(flat, flat.new_zeros(1, dtype=torch.long), 1, bits, points)[0]
    return quantized_loss(flat, alpha, bits), float(alpha)


def histogram(x: Tensor, bins: int = 100) -> tuple[Tensor, Tensor]:
    """(counts, bin edges) over the range of x (on the CPU: torch.histogram has no CUDA kernel)."""
    x = x.detach().double().flatten().cpu()
    return torch.histogram(x, bins=bins)


HISTOGRAM_BINS = 64


def layer_weight_stats(qmodel: nn.Module) -> dict[str, dict[str, Any]]:
    """Kurtosis, best QL_2 (at the layer's weight bits) and a histogram of each quantized
    layer's weight as its quantizer's current mode sees it: the float weight in `float` mode,
    the Scale-Clipped weight in `clip` and `quant` modes."""
    from gdrq_bench.quant.convert import quantized_layers

    stats = {}
    for name, layer in quantized_layers(qmodel):
        quantizer = layer.weight_quantizer
        with torch.no_grad():
            weight = quantizer.effective(layer.weight)
        bits = quantizer.bits if quantizer.bits != 32 else 8
        counts, edges = histogram(weight, HISTOGRAM_BINS)
        stats[name] = {
            "kurtosis": kurtosis(weight),
            "ql2": optimal_quantized_loss(weight, bits)[0],
            "bits": float(quantizer.bits),
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        }
    return stats
