"""The uniform fake quantizer (docs/method.md section 2) against a numpy re-implementation."""

import numpy as np
import pytest
import torch
from quant_reference import positive_levels, reference_quantize

from gdrq_bench.quant import check_bits, fake_quantize, level_range

BITS = list(range(2, 9))
SIGNS = [True, False]
ALPHA = 1.3


def _alpha64(value: float = ALPHA) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_matches_numpy_reference(bits, signed):
    x = np.random.default_rng(bits).normal(0.0, 1.0, 4000)
    out = fake_quantize(torch.from_numpy(x), bits, _alpha64(), signed=signed)
    np.testing.assert_allclose(out.numpy(), reference_quantize(x, bits, ALPHA, signed), atol=1e-12)


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_outputs_lie_on_the_grid_inside_the_clip(bits, signed):
    x = torch.randn(4000, generator=torch.Generator().manual_seed(bits)) * 2
    out = fake_quantize(x, bits, ALPHA, signed=signed).double()
    levels = out / (ALPHA / positive_levels(bits, signed))
    np.testing.assert_allclose(levels, levels.round(), atol=1e-4)
    assert out.max() <= ALPHA + 1e-6
    assert out.min() >= (-ALPHA if signed else 0.0) - 1e-6


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_level_count_when_input_spans_the_range(bits, signed):
    x = torch.linspace(-2 * ALPHA, 2 * ALPHA, 20001, dtype=torch.float64)
    levels = torch.unique(fake_quantize(x, bits, _alpha64(), signed=signed)).numel()
    assert levels == (2**bits - 1 if signed else 2**bits)


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_quantizing_twice_changes_nothing(bits, signed):
    x = torch.randn(4000, generator=torch.Generator().manual_seed(bits)) * 2
    once = fake_quantize(x, bits, 0.77, signed=signed)
    assert torch.equal(fake_quantize(once, bits, 0.77, signed=signed), once)


def test_level_range_table():
    assert level_range(4, signed=True) == (-7, 7)
    assert level_range(4, signed=False) == (0, 15)
    assert level_range(2, signed=True) == (-1, 1)
    assert level_range(8, signed=False) == (0, 255)


# Inside [-1, 1] except the first two and the last two; none on a clip boundary.
INPUTS = [-3.0, -1.2, -0.9, -0.2, 0.05, 0.3, 0.95, 1.1, 2.5]


@pytest.mark.parametrize(
    ("signed", "grad_outside", "expected"),
    [
        (True, False, [0, 0, 1, 1, 1, 1, 1, 0, 0]),
        (False, False, [0, 0, 0, 0, 1, 1, 1, 0, 0]),
        (True, True, [1] * 9),
        (False, True, [1] * 9),
    ],
)
def test_straight_through_gradient(signed, grad_outside, expected):
    x = torch.tensor(INPUTS, requires_grad=True)
    fake_quantize(x, 3, 1.0, signed=signed, grad_outside=grad_outside).sum().backward()
    assert x.grad.tolist() == [float(value) for value in expected]


def test_alpha_gradient_is_lsq():
    """dQ/dalpha = (round(x/d) - x/d) / n inside the clip, +-1 (the clipped level / n) outside."""
    bits, n = 3, 3
    alpha = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    x = torch.tensor(INPUTS, dtype=torch.float64)
    scaled = x.numpy() * n
    inside = np.abs(x.numpy()) <= 1.0
    expected = np.where(inside, (np.round(scaled) - scaled) / n, np.sign(scaled))
    for value, want in zip(x, expected, strict=True):
        (grad,) = torch.autograd.grad(fake_quantize(value, bits, alpha), alpha)
        assert grad.item() == pytest.approx(want, abs=1e-12)


def test_bits_32_returns_the_input():
    x = torch.randn(10)
    assert fake_quantize(x, 32, 1e-3) is x


@pytest.mark.parametrize("bits", [0, 1, 9, 33, True, 4.0])
def test_bad_bits_raise_naming_the_argument(bits):
    with pytest.raises(ValueError, match=r"^bits="):
        fake_quantize(torch.randn(3), bits, 1.0)
    with pytest.raises(ValueError, match=r"^w_bits="):
        check_bits(bits, "w_bits")


@pytest.mark.parametrize("bits", [*BITS, 32])
def test_valid_bits_pass(bits):
    assert check_bits(bits) == bits


def _straight_through_graph(x: torch.Tensor, bits: int, alpha: torch.Tensor, signed: bool):
    """The estimator written as plain autograd ops: clamp, round with an identity gradient."""
    lo, hi = level_range(bits, signed)
    step = alpha.clamp_min(1e-12) / hi
    clamped = torch.clamp(x / step, lo, hi)
    return (clamped + (torch.round(clamped) - clamped).detach()) * step


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("signed", [True, False])
def test_fixed_clip_path_matches_the_autograd_graph_bit_for_bit(dtype, bits, per_channel, signed):
    """Values and gradients, including inputs exactly on the clip ends (clamp gives them no
    gradient) and on zero."""
    generator = torch.Generator().manual_seed(bits)
    lo, hi = level_range(bits, signed)
    # steps that are powers of two, so lo * step and hi * step divide back to lo and hi exactly
    steps = torch.tensor([0.25, 0.5], dtype=dtype)
    step = steps[torch.arange(16) % 2].reshape(-1, 1, 1) if per_channel else steps[0]
    alpha = step * hi
    x = 0.6 * hi * step * torch.randn(16, 9, 5, generator=generator, dtype=dtype)
    x[:, 0, 0], x[:, 0, 1], x[:, 0, 2] = (lo * step).flatten(), alpha.flatten(), 0.0
    x.requires_grad_()
    upstream = torch.randn(16, 9, 5, generator=generator, dtype=dtype)
    fused = fake_quantize(x, bits, alpha, signed=signed)
    graph = _straight_through_graph(x, bits, alpha, signed)
    assert torch.equal(fused, graph)
    (fused_grad,) = torch.autograd.grad(fused, x, upstream)
    (graph_grad,) = torch.autograd.grad(graph, x, upstream)
    assert torch.equal(fused_grad, graph_grad)
    assert not fused_grad[:, 0, :2].any()  # the clip ends
    assert 0 < int((fused_grad == 0).sum()) < x.numel()
