"""Scale-Clip (METHOD.md section 3): dynamic weight thresholds and the activation EMA clip."""

import numpy as np
import pytest
import torch
from quant_reference import reference_quantize

from gdrq_bench.quant import CLIP, QUANT
from gdrq_bench.quant.act_quant import ScaleClipAct
from gdrq_bench.quant.scale_clip import weight_threshold
from gdrq_bench.quant.weight_quant import GroupWeightQuantizer

STATS = {"mean_abs": lambda w: np.abs(w).mean(), "std": lambda w: w.std()}


def _weight(seed: int = 0) -> torch.nn.Parameter:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=generator, dtype=torch.float64))


def _edits(weight: torch.nn.Parameter) -> list:
    """Ways to change the weights between two forwards (as an optimizer step would)."""
    return [
        lambda: weight.data.mul_(3.0),
        lambda: weight.data[0, 0, 0].fill_(40.0),
        lambda: weight.data.add_(0.5),
    ]


@pytest.mark.parametrize("stat", sorted(STATS))
@pytest.mark.parametrize("k", [1.0, 2.0, 3.0])
def test_weight_threshold_formula(stat, k):
    weight = _weight()
    expected = k * STATS[stat](weight.detach().numpy())
    assert weight_threshold(weight, k, stat).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("stat", sorted(STATS))
def test_clip_mode_threshold_follows_the_current_weights(stat):
    weight, k = _weight(), 2.0
    quantizer = GroupWeightQuantizer(4, 8, 2, clip_k=k, stat=stat).train()
    quantizer.mode = CLIP
    for edit in [lambda: None, *_edits(weight)]:
        edit()
        w = weight.detach().numpy()
        threshold = k * STATS[stat](w)
        out = quantizer(weight).detach().numpy()
        np.testing.assert_allclose(out, np.clip(w, -threshold, threshold), rtol=1e-12)
        assert np.abs(out).max() == pytest.approx(threshold, rel=1e-12)


def test_quant_mode_clips_at_the_current_threshold_then_rounds():
    """Scale-Clip-only weights: T = k mean|W|, alpha = k mean|clip(W, T)|, both of this step."""
    weight, k, bits = _weight(), 2.0, 4
    quantizer = GroupWeightQuantizer(bits, 8, 1, alpha_mode="scale_clip", k_w=k, clip_k=k).train()
    assert quantizer.mode == QUANT
    for edit in [lambda: None, *_edits(weight)]:
        edit()
        w = weight.detach().numpy()
        threshold = k * np.abs(w).mean()
        clipped = np.clip(w, -threshold, threshold)
        expected = reference_quantize(clipped, bits, k * np.abs(clipped).mean())
        np.testing.assert_allclose(quantizer(weight).detach().numpy(), expected, atol=1e-12)


def test_reshape_of_a_searched_quantizer_uses_the_current_threshold():
    weight = _weight()
    quantizer = GroupWeightQuantizer(4, 8, 2, clip_k=2.0, alpha_every=1).train()
    for edit in [lambda: None, *_edits(weight)]:
        edit()
        threshold = 2.0 * weight.detach().abs().mean().item()
        assert quantizer.effective(weight).abs().max().item() == pytest.approx(threshold)
        assert quantizer(weight).abs().max().item() <= threshold * (1 + 1e-12)


def _batches(count: int, signed: bool = False) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 5, 5, generator=generator) * (i + 1) for i in range(count)]
    return batches if signed else [batch.relu() for batch in batches]


def test_activation_ema_updates_in_train_mode():
    k_a, momentum, bits = 4.0, 0.1, 4
    quantizer = ScaleClipAct(bits, k_a, momentum).train()
    running = None
    for batch in _batches(4):
        mean_abs = batch.abs().mean().item()
        running = mean_abs if running is None else (1 - momentum) * running + momentum * mean_abs
        out = quantizer(batch)
        assert quantizer.running_stat.item() == pytest.approx(running, rel=1e-6)
        expected = reference_quantize(batch.numpy(), bits, k_a * running, signed=False)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_activation_clip_is_frozen_in_eval_mode():
    quantizer = ScaleClipAct(4, 4.0, 0.1).train()
    first, *others = _batches(3)
    quantizer(first)
    frozen = quantizer.running_stat.clone()
    quantizer.eval()
    for batch in others:
        out = quantizer(batch * 10)
        assert torch.equal(quantizer.running_stat, frozen)
        assert out.max().item() == pytest.approx(4.0 * frozen.item())
    quantizer.train()(others[0])
    assert not torch.equal(quantizer.running_stat, frozen)


@pytest.mark.parametrize("signed", [False, True])
def test_clip_mode_clips_without_rounding(signed):
    quantizer = ScaleClipAct(2, 1.0, 0.1).train()
    quantizer.mode = CLIP
    batch = _batches(1, signed)[0]
    out = quantizer(batch)
    alpha = batch.abs().mean().item()
    expected = np.clip(batch.numpy(), -alpha if signed else 0.0, alpha)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    assert quantizer.signed == signed
    assert torch.unique(out).numel() > 2**2  # more values than the 2-bit grid has
