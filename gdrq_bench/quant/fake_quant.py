"""Uniform fake quantization with straight-through gradients (docs/method.md section 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from gdrq_bench.quant.choices import FLOAT_BITS, check_bits
from gdrq_bench.quant.fused import kernels_for

# Smallest clip allowed: keeps an all-zero tensor from dividing by a zero step.
MIN_ALPHA = 1e-12


def level_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer levels of the grid: -(2^(b-1)-1)..2^(b-1)-1 signed, 0..2^b-1 unsigned."""
    if signed:
        top = 2 ** (bits - 1) - 1
        return -top, top
    return 0, 2**bits - 1


def quant_step(alpha: Tensor | float, bits: int, signed: bool) -> Tensor:
    """Grid step d = alpha / n for the clip `alpha` (a tensor broadcastable to the input)."""
    if not isinstance(alpha, Tensor):
        alpha = torch.tensor(alpha, dtype=torch.float64)  # cast to the input's dtype by callers
    return alpha.clamp_min(MIN_ALPHA) / level_range(bits, signed)[1]


def round_ste(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def grad_scale(x: Tensor, scale: float) -> Tensor:
    """Identity forward; multiplies the gradient by `scale` (LSQ's step-size gradient scale)."""
    return (x - x * scale).detach() + x * scale


def integer_levels(x: Tensor, bits: int, alpha: Tensor | float, signed: bool) -> Tensor:
    """The integers Q(x)/d as a float tensor of x's dtype; the folded model computes these."""
    lo, hi = level_range(bits, signed)
    step = quant_step(alpha, bits, signed).to(x.dtype)
    return torch.round(torch.clamp(x / step, lo, hi))


def fake_quantize(
    x: Tensor,
    bits: int,
    alpha: Tensor | float,
    signed: bool = True,
    grad_outside: bool = False,
) -> Tensor:
    """Q(x) = d * round(clamp(x / d, lo, hi)), d = alpha / n, with a straight-through estimator.

    Gradient w.r.t. x is 1 inside the clip range and 0 outside it, or 1 everywhere when
    `grad_outside` (the pass-through option for weights). When `alpha` is a tensor that needs a
    gradient it receives the LSQ gradient of the rounding (d Q / d alpha through round_ste).
    `bits == 32` returns x unchanged.
    """
    check_bits(bits)
    if bits == FLOAT_BITS:
        return x
    lo, hi = level_range(bits, signed)
    step = quant_step(alpha, bits, signed)
    if isinstance(step, Tensor):
        step = step.to(x.dtype)
    if not grad_outside and not step.requires_grad:
        return _FixedClipQuantize.apply(x, step, lo, hi)
    scaled = x / step
    q = round_ste(torch.clamp(scaled, lo, hi)) * step
    if grad_outside:
        outside = ((scaled < lo) | (scaled > hi)).to(x.dtype)
        q = q + (x - x.detach()) * outside
    return q


class _FixedClipQuantize(torch.autograd.Function):
    """fake_quantize for a clip that takes no gradient (Scale-Clip's and min-max's EMA clips,
    every weight quantizer but LSQ's): the values and gradients of the straight-through graph
    above, bit for bit (a zero may carry the other sign), from one temporary and a boolean
    mask instead of the graph's six temporaries; the backward multiplies by the mask rather
    than calling torch.where (a fifth faster on a 12.8M-element activation). On ResNet-18 at
    224x224, batch 32, 2 CPU cores, it took GDRQ's training step from 1.41x to 1.30x the float
    step, and with the mask multiply and the unsigned statistic of act_quant to 1.22x
    (`python bench/step_cost.py --models resnet18 --sizes 224 --batches 32`). On the CPU both
    directions run as one pass of the same operations (fused.py), where the kernels are built.
    """

    @staticmethod
    def forward(ctx, x: Tensor, step: Tensor, lo: int, hi: int) -> Tensor:
        keep_mask = ctx.needs_input_grad[0]
        kernels = kernels_for(x, step)
        if kernels is not None:  # the same operations in one pass (fused.py)
            out, inside = kernels.quantize_forward(
                x.contiguous(), step.contiguous(), lo, hi, keep_mask
            )
        else:
            scaled = x / step
            inside = (scaled > lo) & (scaled < hi)  # as clamp: the ends get gradient 0
            out = scaled.clamp_(lo, hi).round_().mul_(step)
        if keep_mask:
            ctx.save_for_backward(inside, step)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        # The graph's chain, in its order: d(r * step)/dr, clamp's mask, d(x / step)/dx.
        inside, step = ctx.saved_tensors
        kernels = kernels_for(grad, step)
        if kernels is not None:
            grad_x = kernels.quantize_backward(grad.contiguous(), inside, step.contiguous())
        else:
            grad_x = (grad * step).mul_(inside).div_(step)
        return grad_x, None, None, None
