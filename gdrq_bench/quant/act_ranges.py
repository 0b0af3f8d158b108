"""Activation ranges of post-training quantization: the clip an activation quantizer takes
from calibration images, by one of three rules (trainer.calibrate.act_range):

- `max`: max |a| over every calibration value (min-max, symmetric or post-ReLU);
- `percentile`: the given percentile of |a| (linear interpolation, numpy's default), which
  leaves the rarest outliers outside the clip;
- `mse`: the clip among `points` fractions of max |a| whose rounding error on the values,
  mean (Q(a) - a)^2, is least (the QL_2 optimum, as the weights' group search).

The percentile and MSE rules read a sample of each layer's values (every value of a small
batch; an even random share of a large one), the maximum and the sign all of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gdrq_bench.quant.fake_quant import MIN_ALPHA, level_range

RANGE_RULES = ("max", "percentile", "mse")
SAMPLE_LIMIT = 1 << 19  # values kept per layer over all calibration batches (2 MiB)
BATCH_SAMPLE = 1 << 12  # values of one training batch its MSE clip is found on
MSE_POINTS = 64  # candidate clips, fractions of the sample's max |a|
MSE_CHUNK = 8  # candidate clips scored per pass over the sample (memory: 8 x the sample)


class ActivationSample:
    """What calibration saw at one activation quantizer: max |a|, whether any value was
    negative (the signed grid, as ActQuantizer reads it), and up to `per_batch` values of |a|
    from each batch (none for the max rule), drawn with `generator` where a batch has more."""

    def __init__(self, per_batch: int, generator: torch.Generator) -> None:
        self.per_batch, self.generator = per_batch, generator
        self.maximum = 0.0
        self.negative = False
        self.values: list[Tensor] = []

    def add(self, x: Tensor) -> None:
        x = x.detach().float().flatten()
        if not x.numel():
            return
        low, high = torch.aminmax(x)
        self.maximum = max(self.maximum, float(-low), float(high))
        self.negative = self.negative or bool(low < 0)
        if not self.per_batch:
            return
        self.values.append(drawn(x, self.per_batch, self.generator).abs().cpu())

    def clip(self, rule: str, bits: int, percentile: float, points: int) -> float:
        """The clip `rule` gives these values at `bits` (see the module docstring)."""
        if rule == "max" or not self.values:
            return max(self.maximum, MIN_ALPHA)
        values = torch.cat(self.values)
        if rule == "percentile":
            return max(percentile_clip(values, percentile), MIN_ALPHA)
        if rule == "mse":
            return max(mse_clip(values, bits, not self.negative, points), MIN_ALPHA)
        raise ValueError(f"act_range={rule!r} is unknown: use one of {RANGE_RULES}")


def percentile_clip(magnitudes: Tensor, percentile: float) -> float:
    """The `percentile` (0..100) of the values, interpolated linearly between order
    statistics (numpy.percentile's default)."""
    values = magnitudes.double()
    position = (values.numel() - 1) * percentile / 100
    below = int(position)
    above = min(below + 1, values.numel() - 1)
    weight = position - below
    low, high = (float(values.kthvalue(index + 1).values) for index in (below, above))
    return low * (1 - weight) + high * weight


def mse_clip(magnitudes: Tensor, bits: int, unsigned: bool, points: int) -> float:
    """The clip among max * k / points (k = 1..points) whose rounding error on the values,
    mean (Q(a) - a)^2 at `bits` on the unsigned or the signed grid, is least (the first of
    equal ones). On the signed grid |a| and a round alike, so the magnitudes stand for a."""
    top = level_range(bits, signed=not unsigned)[1]
    values = magnitudes.float()
    candidates = values.max() * torch.arange(1, points + 1, dtype=torch.float32) / points
    errors = []
    for chunk in candidates.split(MSE_CHUNK):
        steps = chunk.clamp_min(MIN_ALPHA)[:, None] / top
        rounded = torch.round(torch.clamp(values[None] / steps, 0, top)).mul_(steps)
        errors.append(rounded.sub_(values[None]).square_().double().mean(dim=1))
    return float(candidates[int(torch.argmin(torch.cat(errors)))])


def batch_mse_clip(x: Tensor, bits: int, unsigned: bool) -> float:
    """The MSE clip (`mse_clip`, MSE_POINTS candidates) of one batch's values, found on at
    most BATCH_SAMPLE of them: a training-time clip statistic (method.act_stat=mse) that costs
    a few hundred thousand operations per step. The sample is drawn by a generator of its own,
    seeded by the batch's size, so training's random stream is the same whatever the
    statistic; it is drawn, not strided, because an even stride through an NCHW tensor whose
    plane is a multiple of it visits the same few pixels of every plane (the image border)."""
    values = x.detach().flatten()
    values = drawn(values, BATCH_SAMPLE, torch.Generator().manual_seed(values.numel()))
    return max(mse_clip(values.abs(), bits, unsigned, MSE_POINTS), MIN_ALPHA)


def drawn(values: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """The flat `values`, or `count` of them drawn by `generator` where there are more (with
    replacement: a permutation cost 4x more)."""
    if values.numel() <= count:
        return values
    picked = torch.randint(values.numel(), (count,), generator=generator)
    return values[picked.to(values.device)]
