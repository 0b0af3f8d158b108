"""Distribution statistics: kurtosis, the quantized loss QL_p, histograms, and how much the
clips cut off weights and activations (docs/method.md 1, 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from gdrq_bench.quant.choices import FLOAT_BITS
from gdrq_bench.quant.convert import quantized_layers
from gdrq_bench.quant.fake_quant import fake_quantize
from gdrq_bench.quant.groups import search_group_alpha
from gdrq_bench.quant.modes import QUANT


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


def relative_error(reference: Tensor, x: Tensor) -> float:
    """||reference - x||_2 / ||reference||_2, in float64."""
    reference, x = reference.detach().double(), x.detach().double()
    return float(torch.linalg.vector_norm(reference - x) / torch.linalg.vector_norm(reference))


def optimal_quantized_loss(
    x: Tensor, bits: int, points: int = 64, reference: Tensor | None = None
) -> tuple[float, float]:
    """(min QL_2 over the clip grid, the clip that reaches it), per tensor. With `reference`
    (the stored weights x was clipped from), the loss is ||reference - Q(x)|| / ||reference||:
    the clip's own error counts."""
    flat = x.detach().double().reshape(1, -1)
    target = flat if reference is None else reference.detach().double().reshape(1, -1)
    alpha = search_group_alpha(flat, flat.new_zeros(1, dtype=torch.long), 1, bits, points, target)
    quantized = fake_quantize(flat, bits, alpha[0], signed=True)
    return relative_error(target, quantized), float(alpha[0])


def clip_statistics(stored: Tensor, clipped: Tensor) -> dict[str, float]:
    """How much a clip changed a tensor: the fraction of its elements it moved (`clipped`)
    and the relative L2 change ||stored - clipped|| / ||stored|| (`clip_l2`)."""
    moved = (clipped.detach() != stored.detach()).double().mean()
    return {"clipped": float(moved), "clip_l2": relative_error(stored, clipped)}


def histogram(x: Tensor, bins: int = 100) -> tuple[Tensor, Tensor]:
    """(counts, bin edges) over the range of x (on the CPU: torch.histogram has no CUDA kernel)."""
    x = x.detach().double().flatten().cpu()
    return torch.histogram(x, bins=bins)


HISTOGRAM_BINS = 64


def layer_weight_stats(qmodel: nn.Module) -> dict[str, dict[str, Any]]:
    """Each quantized layer's weight as its quantizer's current mode sees it (the float
    weight in `float` mode, the Scale-Clipped weight in `clip` and, while Scale-Clip is on,
    `quant` mode): kurtosis, histogram, and QL_2 at the layer's weight bits at the best
    per-tensor clip, measured against the stored weights so that Scale-Clip's own error
    counts. Where the quantizer clips: the clip's statistics (clip_statistics) against the
    stored weights, and in `quant` mode `ql2_quantizer`, the error of the layer's own
    quantizer (its groups and clips) against them. Read in eval mode."""
    was_training = qmodel.training
    qmodel.eval()
    stats = {}
    for name, layer in quantized_layers(qmodel):
        quantizer, stored = layer.weight_quantizer, layer.weight.detach()
        with torch.no_grad():
            seen = quantizer.effective(stored)
            clipped = quantizer.clipped(stored)
        bits = quantizer.bits if quantizer.bits != FLOAT_BITS else 8
        counts, edges = histogram(seen, HISTOGRAM_BINS)
        entry: dict[str, Any] = {
            "kurtosis": kurtosis(seen),
            "ql2": optimal_quantized_loss(seen, bits, reference=stored)[0],
            "bits": float(quantizer.bits),
        }
        if clipped is not None:
            entry.update(clip_statistics(stored, clipped))
        if quantizer.mode == QUANT and quantizer.bits != FLOAT_BITS:
            with torch.no_grad():
                entry["ql2_quantizer"] = relative_error(stored, quantizer(stored))
        entry["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist()}
        stats[name] = entry
    qmodel.train(was_training)
    return stats


def _energy(batch: Tensor) -> float:
    """sum(x^2) of a batch: a float32 norm per sample, the squares summed in float64 (within
    1e-8 of a float64 sum, at a twentieth of its time on a 500-image batch)."""
    per_sample = torch.linalg.vector_norm(batch.reshape(len(batch), -1), dim=1)
    return float(per_sample.double().square().sum())


@contextmanager
def recording_activation_clips(qmodel: nn.Module) -> Iterator[dict[str, dict[str, float]]]:
    """Record, while the block runs, how much each quantized layer's input clip cuts off:
    per layer, the fraction of input values clipped (`act_clipped`) and the fraction of the
    input's energy sum(x^2) the clip removes, ||x - clip(x)||^2 / ||x||^2
    (`act_clipped_energy`). The dict it yields is filled when the block ends."""
    totals: dict[str, list[float]] = {}

    def recorder(name: str):
        def record(quantizer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].detach()
            removed = x - quantizer.clipped_input(x)
            sums = totals.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            sums[0] += x.numel()
            sums[1] += int(torch.count_nonzero(removed))
            sums[2] += _energy(x)
            sums[3] += _energy(removed)

        return record

    handles = [
        layer.input_quantizer.register_forward_hook(recorder(name))
        for name, layer in quantized_layers(qmodel)
    ]
    stats: dict[str, dict[str, float]] = {}
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        for name, (count, moved, energy, removed) in totals.items():
            stats[name] = {
                "act_clipped": moved / max(count, 1),
                "act_clipped_energy": removed / energy if energy > 0 else 0.0,
            }
