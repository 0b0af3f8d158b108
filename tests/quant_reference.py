"""Plain numpy re-implementation of docs/method.md's quantizer: what the quant tests compare to."""

from __future__ import annotations

import numpy as np


def positive_levels(bits: int, signed: bool) -> int:
    """n: 2^(b-1) - 1 signed, 2^b - 1 unsigned."""
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def reference_quantize(x, bits: int, alpha, signed: bool = True) -> np.ndarray:
    """d * clip(round(x / d), lo, n) with d = alpha / n, in float64; alpha may broadcast."""
    n = positive_levels(bits, signed)
    step = np.asarray(alpha, dtype=np.float64) / n
    lowest = -n if signed else 0
    return step * np.clip(np.round(np.asarray(x, dtype=np.float64) / step), lowest, n)


def reference_ql(x, alpha, bits: int, p: float = 2.0) -> float:
    """QL_p = ||x - Q(x; alpha)||_p / ||x||_p on the signed grid; alpha may broadcast."""
    x = np.asarray(x, dtype=np.float64)
    error = (x - reference_quantize(x, bits, alpha)).ravel()
    return float(np.linalg.norm(error, p) / np.linalg.norm(x.ravel(), p))


def reference_mse_clip(values: np.ndarray, bits: int, unsigned: bool, points: int) -> float:
    """The clip among max|v| * k / points (k = 1..points) with the least mean squared rounding
    error on the values, in float64 (the first of equal ones)."""
    magnitudes = np.abs(np.asarray(values, dtype=np.float64))
    best, best_error = 0.0, np.inf
    for k in range(1, points + 1):
        alpha = magnitudes.max() * k / points
        rounded = reference_quantize(magnitudes, bits, alpha, signed=not unsigned)
        error = np.mean((rounded - magnitudes) ** 2)
        if error < best_error:
            best, best_error = alpha, error
    return best
