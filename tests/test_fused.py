"""quant/fused.py: the one-pass kernels give fake_quantize's eager values and gradients bit for
bit, clip ends, ties, signed zeros, NaN and infinities included."""

from __future__ import annotations

import warnings

import pytest
import torch

from gdrq_bench.quant import fake_quantize, fused
from gdrq_bench.quant.fused import kernels_for, use_fused_kernels

INTEGER_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}


@pytest.fixture
def eager():
    """Run the test's body on the eager form; the kernels are on again after it."""
    use_fused_kernels(False)
    yield
    use_fused_kernels(True)


def _awkward(shape: tuple[int, ...], step: torch.Tensor, hi: int, dtype: torch.dtype):
    """Random values, and in the first rows the grid's ends, ties between levels, signed
    zeros, values just inside and outside the ends, NaN and infinities."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64) * 0.6 * hi * step.double()
    specials = torch.tensor(
        [hi, -hi, 0.5, -0.5, 2.5, -1.5, hi + 0.5, hi - 0.5, hi * 1.0001, -hi * 0.9999],
        dtype=torch.float64,
    )
    flat_step = step.double().expand(shape).reshape(-1)
    flat = x.reshape(-1)
    flat[: len(specials)] = specials * flat_step[: len(specials)]
    flat[len(specials) : len(specials) + 6] = torch.tensor(
        [0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e30], dtype=torch.float64
    )
    return x.to(dtype)


def _quantize_with_grad(x, bits, step, signed, upstream):
    x = x.clone().requires_grad_(True)
    out = fake_quantize(x, bits, step * (2 ** (bits - 1) - 1 if signed else 2**bits - 1), signed)
    out.backward(upstream)
    return out.detach(), x.grad


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(INTEGER_VIEW[a.dtype]), b.view(INTEGER_VIEW[b.dtype]))


@pytest.fixture
def two_threads():
    """Two threads, so the kernels' parallel pieces start inside rows."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape, step_shape",
    [
        ((37, 64, 3, 3), (37, 1, 1, 1)),  # a conv weight, one step per filter, over 32768 values
        ((10, 300), (10, 1)),  # a linear weight
        ((4, 16, 9, 9), ()),  # an activation, one step
        ((5, 7), (1,)),
    ],
)
@pytest.mark.parametrize("bits, signed", [(4, True), (2, True), (4, False), (8, False)])
def test_fused_kernels_give_the_eager_values_and_gradients_bit_for_bit(
    dtype, shape, step_shape, bits, signed, request
) -> None:
    torch.manual_seed(1)
    step = (torch.rand(step_shape, dtype=torch.float64) * 0.1 + 0.01).to(dtype)
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    x = _awkward(shape, step, hi, dtype)
    upstream = torch.randn(shape, dtype=dtype)
    upstream.reshape(-1)[:3] = torch.tensor([-0.0, float("nan"), 1e30], dtype=dtype)
    assert kernels_for(x, step) is not None, "the kernels were not built"
    fused = _quantize_with_grad(x, bits, step, signed, upstream)
    request.getfixturevalue("eager")
    assert kernels_for(x, step) is None
    reference = _quantize_with_grad(x, bits, step, signed, upstream)
    assert _same_bits(fused[0], reference[0]), "values differ"
    assert _same_bits(fused[1], reference[1]), "gradients differ"


def test_what_the_kernels_do_not_serve_runs_the_eager_form() -> None:
    x = torch.randn(4, 6)
    assert kernels_for(x, torch.ones(1, 6)) is None  # a step along another dimension
    assert kernels_for(x, torch.ones(4, 1, dtype=torch.float64)) is None  # another dtype
    assert kernels_for(x.half(), torch.ones(1).half()) is None
    assert kernels_for(x, torch.ones(4, 1)) is not None


def test_a_failed_build_warns_once_and_runs_the_eager_form(tmp_path, monkeypatch) -> None:
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(fused, "SOURCE", broken)
    monkeypatch.setattr(fused, "NAME", "gdrq_test_broken_kernels")
    monkeypatch.setattr(fused, "_built", None)
    monkeypatch.setattr(fused, "_failed", False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    x, step = torch.randn(3, 5), torch.full((3, 1), 0.1)
    with pytest.warns(UserWarning, match="could not be built"):
        assert kernels_for(x, step) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not tried again: no second warning
        assert kernels_for(x, step) is None
    expected = torch.round(torch.clamp(x / 0.1, -7, 7)) * 0.1
    torch.testing.assert_close(fake_quantize(x, 4, step * 7), expected)
