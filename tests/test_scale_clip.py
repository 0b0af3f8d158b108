"""Scale-Clip (docs/method.md section 3): dynamic weight thresholds and the activation EMA clip."""

import numpy as np
import pytest
import torch
from quant_reference import reference_mse_clip, reference_quantize

from gdrq_bench.quant import CLIP, QUANT
from gdrq_bench.quant.act_quant import ScaleClipAct
from gdrq_bench.quant.group_clips import MeanClip
from gdrq_bench.quant.scale_clip import weight_threshold
from gdrq_bench.quant.spec import QuantSpec
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
    quantizer = GroupWeightQuantizer(
        4, 8, 2, QuantSpec(k_w=k, clip_style="clamp", weight_stat=stat), scale_clip=True
    ).train()
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
    quantizer = GroupWeightQuantizer(
        bits, 8, 1, QuantSpec(k_w=k, clip_style="clamp"), clip=MeanClip(1, k), scale_clip=True
    ).train()
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
    quantizer = GroupWeightQuantizer(
        4, 8, 2, QuantSpec(k_w=2.0, clip_style="clamp", alpha_every=1), scale_clip=True
    ).train()
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
    quantizer = ScaleClipAct(bits, k_a, momentum, "mean_abs").train()
    running = None
    for batch in _batches(4):
        mean_abs = batch.abs().mean().item()
        running = mean_abs if running is None else (1 - momentum) * running + momentum * mean_abs
        out = quantizer(batch)
        assert quantizer.running_stat.item() == pytest.approx(running, rel=1e-6)
        expected = reference_quantize(batch.numpy(), bits, k_a * running, signed=False)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_activation_clip_is_frozen_in_eval_mode():
    quantizer = ScaleClipAct(4, 4.0, 0.1, "mean_abs").train()
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


@pytest.mark.parametrize(("signed", "shape"), [(False, (4, 3, 5, 5)), (True, (64, 16, 8, 8))])
def test_the_mse_statistic_is_each_batchs_least_squared_error_clip(signed, shape):
    """act_stat=mse: the batch's clip whose rounding errs least (found here in numpy), over
    4,096 values drawn by a generator seeded with the batch's size (all of a small batch),
    EMA-averaged like the other statistics; no global random number is drawn."""
    momentum, bits = 0.5, 3
    quantizer = ScaleClipAct(bits, 1.0, momentum, "mse").train()
    torch.manual_seed(2)
    running = None
    for scale in (1.0, 2.0):
        batch = torch.distributions.StudentT(3.0).sample(shape) * scale  # heavy tails
        batch = batch if signed else batch.abs()
        values = batch.flatten()
        if values.numel() > 4096:
            generator = torch.Generator().manual_seed(values.numel())
            values = values[torch.randint(values.numel(), (4096,), generator=generator)]
        clip = reference_mse_clip(values.numpy(), bits, unsigned=not signed, points=64)
        running = clip if running is None else (1 - momentum) * running + momentum * clip
        state = torch.get_rng_state()
        quantizer(batch)
        assert torch.equal(torch.get_rng_state(), state)
        assert quantizer.signed == signed
        assert quantizer.running_stat.item() == pytest.approx(running, rel=1e-5)
        assert clip < np.abs(batch.numpy()).max()  # the outliers are clipped off


def test_the_mse_statistic_sees_the_whole_image_not_its_border():
    """Zero-padded images: an even stride through the NCHW values (here every 512th of 32x32
    planes) would see only border pixels and clip at nothing."""
    batch = torch.zeros(128, 16, 32, 32)
    batch[:, :, 2:30, 2:30] = torch.rand(128, 16, 28, 28)
    quantizer = ScaleClipAct(4, 1.0, 1.0, "mse").train()
    quantizer(batch)
    assert quantizer.running_stat.item() > 0.5


@pytest.mark.parametrize("signed", [False, True])
def test_clip_mode_clips_without_rounding(signed):
    quantizer = ScaleClipAct(2, 1.0, 0.1, "mean_abs").train()
    quantizer.mode = CLIP
    batch = _batches(1, signed)[0]
    out = quantizer(batch)
    alpha = batch.abs().mean().item()
    expected = np.clip(batch.numpy(), -alpha if signed else 0.0, alpha)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    assert quantizer.signed == signed
    assert torch.unique(out).numel() > 2**2  # more values than the 2-bit grid has


def _clip_gradient(quantizer: GroupWeightQuantizer, weight: torch.nn.Parameter) -> np.ndarray:
    weight.grad = None
    quantizer(weight).sum().backward()
    return weight.grad.numpy()


@pytest.mark.parametrize(("grad_outside", "outside"), [(False, 0.0), (True, 1.0)])
def test_gradient_through_the_weight_clamp(grad_outside, outside):
    """`clamp`: d clip(W)/dW is 1 inside T and 0 (weight_grad=clip) or 1 (pass) beyond it."""
    weight = _weight()
    quantizer = GroupWeightQuantizer(
        4,
        8,
        2,
        QuantSpec(k_w=1.0, clip_style="clamp", weight_grad="pass" if grad_outside else "clip"),
        scale_clip=True,
    ).train()
    quantizer.mode = CLIP
    threshold = weight.detach().abs().mean().item()
    beyond = np.abs(weight.detach().numpy()) > threshold
    assert 0 < beyond.mean() < 1
    expected = np.where(beyond, outside, 1.0)
    np.testing.assert_array_equal(_clip_gradient(quantizer, weight), expected)


def test_project_clips_the_stored_weights_once_per_step_and_passes_every_gradient():
    weight, k = _weight(), 1.5
    quantizer = GroupWeightQuantizer(
        4, 8, 2, QuantSpec(k_w=k, clip_style="project"), scale_clip=True
    ).train()
    quantizer.mode = CLIP
    before = weight.detach().numpy().copy()
    threshold = k * np.abs(before).mean()
    out = quantizer(weight)
    np.testing.assert_allclose(weight.detach().numpy(), np.clip(before, -threshold, threshold))
    np.testing.assert_array_equal(out.detach().numpy(), weight.detach().numpy())
    assert quantizer.scale_clip.threshold.item() == pytest.approx(threshold, rel=1e-6)
    # a second call of the same step (a shared head) clips nothing more
    stored = weight.detach().clone()
    quantizer(weight)
    assert torch.equal(weight.detach(), stored)
    weight.grad = None
    quantizer(weight).sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), np.ones_like(before))
    # after an optimizer-like update, the next step clips at the new weights' threshold
    with torch.no_grad():
        weight.mul_(2.0)  # in place, as an optimizer step: a new weight version
    quantizer(weight)
    expected = k * np.abs(2 * np.clip(before, -threshold, threshold)).mean()
    assert quantizer.scale_clip.threshold.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("style", ["clamp", "project"])
def test_commit_writes_the_clip_into_the_weights_and_keeps_the_function(style):
    """The end of the reshape stage: what the clip-mode layer computed, the stored weights
    now hold; Scale-Clip is off, so QAT clips by the group clip alone."""
    weight = _weight()
    quantizer = GroupWeightQuantizer(
        4, 8, 2, QuantSpec(k_w=1.5, clip_style=style), scale_clip=True
    ).train()
    quantizer.mode = CLIP
    quantizer(weight)  # one training step: `project` clips the stored weights here
    weight.data.add_(0.01)  # the optimizer's step after it
    seen = quantizer.eval()(weight).detach().clone()
    quantizer.commit_scale_clip(weight)
    assert not quantizer.scale_clip.on
    np.testing.assert_array_equal(weight.detach().numpy(), seen.numpy())
    np.testing.assert_array_equal(quantizer(weight).detach().numpy(), seen.numpy())
    quantizer.mode = QUANT
    weight.data.mul_(3.0)  # no Scale-Clip follows the weights any more
    assert torch.equal(quantizer.train().effective(weight), weight)


def test_single_clip_per_group_is_k_times_the_group_mean():
    """The reference's GDRQ: Scale-Clip committed, then alpha_g = k mean|W_g| and nothing
    else clips (grouping.alpha=scale_clip with method.scale_clip_qat=false)."""
    weight, k, bits, groups = _weight(3), 2.5, 3, 4
    quantizer = GroupWeightQuantizer(
        bits,
        8,
        groups,
        QuantSpec(k_w=k, group_strategy="contiguous"),
        clip=MeanClip(groups, k),
        scale_clip=True,
    ).train()
    quantizer.commit_scale_clip(weight)
    w = weight.detach().numpy()
    rows = w.reshape(groups, -1)  # contiguous groups of 2 filters each
    alpha = k * np.abs(rows).mean(axis=1)
    expected = reference_quantize(rows, bits, alpha[:, None]).reshape(w.shape)
    np.testing.assert_allclose(quantizer(weight).detach().numpy(), expected, atol=1e-12)
