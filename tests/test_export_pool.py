"""The exact graph's global average pool (gdrq_bench/export/pool.py): the mean of an exact sum,
checked against Python's integer arithmetic, the same bits in any summation order and through
onnxruntime at one and two threads, on planes whose float32 sums do depend on the order."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from gdrq_bench.config.errors import ExportError
from gdrq_bench.export import export_exact, session
from gdrq_bench.export.builder import GraphBuilder
from gdrq_bench.export.pool import PoolGrid, exact_mean, lower_exact_mean
from gdrq_bench.export.runtime import run
from gdrq_bench.quant import QuantSpec, fold_model, quantize_model

READER_STEP = 0.0371  # the step of the quantizer reading the pool


def wide_planes(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """float32 values of both signs from 1e-7 to 1e4 reader steps (a few beyond the clip):
    a float32 sum of such a plane rounds differently in different orders."""
    generator = torch.Generator().manual_seed(seed)
    magnitude = 10 ** (torch.rand(shape, generator=generator) * 11 - 7)
    sign = torch.where(torch.rand(shape, generator=generator) < 0.3, -1.0, 1.0)
    x = (sign * magnitude * READER_STEP).float()
    x.view(-1)[:3] = torch.tensor([1e12, -1e12, 3e11])  # over the bound: clipped
    return x


def exact_reference(plane: np.ndarray, grid: PoolGrid) -> np.float32:
    """The grid's mean of one plane in Python's exact arithmetic: each term clipped and rounded
    half to even to whole units, summed as integers, divided and rounded to float64, then to
    float32."""
    unit = Fraction(grid.unit)
    units = [
        round(Fraction(float(min(max(value, -grid.bound), grid.bound))) / unit)
        for value in plane.ravel()
    ]
    mean = Fraction(sum(units)) / Fraction(grid.divisor)
    return np.float32(float(mean))


def sequential_float32_sum(planes: np.ndarray) -> np.ndarray:
    """Each plane's float32 sum, term after term in the given order."""
    return np.cumsum(planes.reshape(*planes.shape[:2], -1), axis=-1, dtype=np.float32)[..., -1]


def test_the_grid_keeps_every_sum_exact() -> None:
    grid = PoolGrid.of(READER_STEP, 64)
    mantissa, _ = math.frexp(grid.unit)
    assert mantissa == 0.5  # a power of two: x / unit is exact
    assert READER_STEP * 2**-25 < grid.unit <= READER_STEP * 2**-24
    assert 64 * grid.bound / grid.unit <= 2**53  # 64 clipped terms stay exact in float64
    assert grid.bound / READER_STEP > 4e6  # the clip: millions of reader steps
    assert grid.divisor == 64 / grid.unit


def test_exact_mean_equals_integer_arithmetic() -> None:
    x = wide_planes((2, 3, 32, 32))
    grid = PoolGrid.of(READER_STEP, 32 * 32)
    actual = exact_mean(x, grid)
    assert actual.dtype == torch.float32 and actual.shape == (2, 3, 1, 1)
    expected = [exact_reference(plane, grid) for plane in x.numpy().reshape(6, 32, 32)]
    assert actual.flatten().numpy().tobytes() == np.array(expected).tobytes()
    # the grid's mean is the float mean to 2^-25 of the reader step, but for the clipped terms
    unclipped = exact_mean(x[:, 1:], grid).double()
    true_mean = x[:, 1:].double().mean(dim=(2, 3), keepdim=True)
    assert (
        unclipped - true_mean
    ).abs().max() <= READER_STEP * 2**-25 + 1e-6 * true_mean.abs().max()


def test_exact_mean_does_not_depend_on_the_order() -> None:
    x = wide_planes((4, 8, 64, 64))
    shuffled = x.flatten(2)[..., torch.randperm(64 * 64)].reshape(x.shape)
    grid = PoolGrid.of(READER_STEP, 64 * 64)
    assert torch.equal(exact_mean(x, grid), exact_mean(shuffled, grid))
    assert torch.equal(exact_mean(x, grid), exact_mean(x.flip(-1, -2), grid))
    # the inputs make a float32 sum's order matter: the test would catch an inexact sum
    forward = sequential_float32_sum(x.numpy())
    assert (forward != sequential_float32_sum(shuffled.numpy())).mean() > 0.5
    assert (forward != sequential_float32_sum(x.flip(-1, -2).numpy())).mean() > 0.5


@pytest.mark.parametrize("torch_threads", [1, 2])
@pytest.mark.parametrize("ort_threads", [1, 2])
def test_onnx_pool_equals_the_reference(ort_threads: int, torch_threads: int) -> None:
    x = wide_planes((8, 16, 64, 64), seed=1)
    grid = PoolGrid.of(READER_STEP, 64 * 64)
    b = GraphBuilder("input")
    model = b.model(["batch", 16, 64, 64], [lower_exact_mean(b, "input", grid)])
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        expected = exact_mean(x, grid)
    finally:
        torch.set_num_threads(before)
    sess = session(model, threads=ort_threads)
    actual = run(sess, x)[0]
    assert actual.dtype == torch.float32
    assert actual.numpy().tobytes() == expected.numpy().tobytes()
    # onnxruntime's sum does not depend on the order either (its GlobalAveragePool's would)
    shuffled = x.flatten(2)[..., torch.randperm(64 * 64)].reshape(x.shape)
    assert run(sess, shuffled)[0].numpy().tobytes() == expected.numpy().tobytes()


def test_a_pool_no_quantized_layer_reads_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    qmodel = quantize_model(model, QuantSpec(w_bits=4, a_bits=4)).train()
    with torch.no_grad():
        qmodel(torch.randn(8, 3, 16, 16))
    folded = fold_model(qmodel.eval())
    with pytest.raises(ExportError, match=r"^3: a global average pool is exported only when"):
        export_exact(folded, ["batch", 3, 16, 16])
