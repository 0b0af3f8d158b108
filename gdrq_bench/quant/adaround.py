"""AdaRound (Nagel et al., 2020): learned rounding of one layer's weights.

Each weight w on the grid of step d rounds down or up, floor(w/d) + h, and h is learned so
that the layer's output on the calibration inputs stays close to the float layer's. h is the
rectified sigmoid of a free variable V, started at the fraction that rounding removes, and a
regulariser sum(1 - |2h - 1|^beta), beta annealed from 20 to 2 after a warm-up without it,
pushes each h to 0 or 1; the result takes h = 1 where V >= 0 (where h >= 1/2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# the rectified sigmoid's stretch: h = clamp(sigmoid(V) * (ZETA - GAMMA) + GAMMA, 0, 1)
ZETA, GAMMA = 1.1, -0.1

# (quantized inputs, weight) -> the layer's output
LayerOp = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class AdaRoundSettings:
    iterations: int = 1000
    samples: int = 32  # input rows (images) per step, drawn from one calibration batch
    # Adam on V: the paper's 1e-3 over its 10,000-20,000 steps; 10x that over our 1,000 steps
    # moves V as far (on an 8x16 linear layer, 500 steps at 1e-3 ended above nearest rounding's
    # error, at 1e-2 11% below it)
    lr: float = 1e-2
    regularization: float = 0.01  # lambda of the rounding regulariser
    beta: tuple[float, float] = (20.0, 2.0)  # its exponent at the warm-up's end and at the end
    warmup: float = 0.2  # share of the iterations without the regulariser


def rectified_sigmoid(logits: Tensor) -> Tensor:
    return torch.clamp(torch.sigmoid(logits) * (ZETA - GAMMA) + GAMMA, 0, 1)


def initial_logits(rest: Tensor) -> Tensor:
    """V with rectified_sigmoid(V) = rest, for rest in [0, 1)."""
    return -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)


def reconstruction_error(output: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over channels (dimension 1), averaged over everything else."""
    return (output - target).square().sum(dim=1).mean()


def _beta(iteration: int, settings: AdaRoundSettings) -> float | None:
    """The regulariser's exponent at `iteration`; None during the warm-up."""
    start = int(settings.warmup * settings.iterations)
    if iteration < start:
        return None
    progress = (iteration - start) / max(settings.iterations - start, 1)
    high, low = settings.beta
    return low + (high - low) * (1 - progress)


def learned_levels(
    weight: Tensor,
    step: Tensor,
    levels: tuple[int, int],
    layer_op: LayerOp,
    inputs: Sequence[Tensor],
    targets: Sequence[Tensor],
    settings: AdaRoundSettings,
    generator: torch.Generator,
) -> Tensor:
    """The integer levels, clamped to `levels`, of `weight` on the grid of `step` (broadcast
    against it) that AdaRound learns for `layer_op` on inputs[i] -> targets[i]."""
    weight, step = weight.detach(), step.detach()
    lo, hi = levels
    floor = torch.floor(weight / step)
    logits = initial_logits(weight / step - floor).requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=settings.lr)
    for iteration in range(settings.iterations):
        batch = int(torch.randint(len(inputs), (1,), generator=generator))
        rows = torch.randperm(inputs[batch].shape[0], generator=generator)[: settings.samples]
        rounding = rectified_sigmoid(logits)
        soft_weight = torch.clamp(floor + rounding, lo, hi) * step
        output = layer_op(inputs[batch][rows], soft_weight)
        loss = reconstruction_error(output, targets[batch][rows])
        beta = _beta(iteration, settings)
        if beta is not None:
            loss = loss + settings.regularization * (1 - (2 * rounding - 1).abs().pow(beta)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return torch.clamp(floor + (logits.detach() >= 0).to(floor.dtype), lo, hi)
