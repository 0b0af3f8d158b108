"""bench/intervals.py: the t quantile, the interval's arithmetic, its coverage under seed and
test-image noise, and one-seed cells borrowing a pooled seed spread."""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import intervals
from intervals import PooledSpread, compare, pool_spreads, t_cdf, t_quantile


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (120, 1.9799)],
)
def test_t_quantile_matches_the_tables(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-5)


def test_t_cdf_matches_the_closed_forms_and_the_normal_limit() -> None:
    for t in (-7.0, -1.3, 0.0, 0.4, 2.5, 40.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)
    assert t_quantile(0.975, 2.5) == pytest.approx(3.574655, abs=1e-6)  # fractional df


def test_t_quantile_agrees_with_scipy_where_installed() -> None:
    stats = pytest.importorskip("scipy.stats")  # not a dependency: only a cross-check
    for df in (1, 1.7, 2, 3.3, 7, 29.5, 400, 2e4):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


def test_chi2_quantile_is_close_to_the_closed_form_at_2_df() -> None:
    """Wilson-Hilferty against chi^2 with 2 df, P(X <= x) = 1 - exp(-x / 2)."""
    assert intervals.chi2_quantile(0.3, 2) == pytest.approx(-2 * math.log(0.7), rel=0.025)
    assert intervals.chi2_quantile(0.5, 2) == pytest.approx(-2 * math.log(0.5), rel=0.015)
    assert intervals.chi2_quantile(0.3, 1e6) == pytest.approx(1e6, rel=1e-3)


# A paired example small enough to work by hand: 3 seeds, 6 images.
REFERENCE = np.array([[0, 1, 1, 1, 0, 1], [0, 1, 0, 0, 0, 0], [0, 1, 1, 1, 0, 1]], dtype=bool)
OTHER = np.array([[0, 1, 0, 1, 0, 1], [1, 0, 1, 1, 1, 1], [1, 0, 0, 1, 0, 0]], dtype=bool)


def test_the_interval_of_a_small_paired_example_worked_by_hand() -> None:
    """Per-seed differences d = (-1, 4, -2) / 6, mean 1/18, s_d^2 = 31/108; per-image
    differences of the seed means (2, -2, -1, 1, 1, 0) / 3, s_img^2 = 13/54; sums of squares
    of D = OTHER - REFERENCE about 1/18: total 197/18, seeds 6 * 62/108 = 31/9, images
    3 * 65/54 = 65/18, flips 35/9 over 2 * 5 df: MS_flip = 7/18. Var = s_d^2/3 + s_img^2/6 -
    MS_flip/18 = (31 + 13 - 7)/324 = 37/324, above the images' term 13/324."""
    n, images = 3, 6
    seeds_term, images_term, flips_term = Fraction(31, 324), Fraction(13, 324), Fraction(7, 324)
    d = [Fraction(int(o.sum()) - int(r.sum()), images) for r, o in zip(REFERENCE, OTHER)]
    assert d == [Fraction(-1, 6), Fraction(4, 6), Fraction(-2, 6)]
    mean = sum(d) / n
    assert sum((x - mean) ** 2 for x in d) / (n - 1) / n == seeds_term
    variance = seeds_term + images_term - flips_term
    assert variance == Fraction(37, 324)
    # Welch-Satterthwaite on the three mean squares, positive terms at their 70% bounds
    bound = {k: k / intervals.chi2_quantile(0.3, k) for k in (2, 5)}
    up = [float(seeds_term) * bound[2], float(images_term) * bound[5], -float(flips_term)]
    df = sum(up) ** 2 / (up[0] ** 2 / 2 + up[1] ** 2 / 5 + up[2] ** 2 / 10)
    half = t_quantile(0.975, df) * math.sqrt(variance) * 100

    interval = compare(REFERENCE, OTHER, paired=True)
    assert interval.seed_noise == "seeds"
    assert interval.difference == pytest.approx(100 / 18)
    assert interval.df == pytest.approx(df)
    assert interval.low == pytest.approx(100 / 18 - half)
    assert interval.high == pytest.approx(100 / 18 + half)
    assert not interval.excludes_zero


def test_one_seed_alone_holds_the_test_images_noise_only() -> None:
    """One seed each and nothing to borrow: the paired difference's normal-theory interval,
    d_mean +- t(N - 1) sd(d) / sqrt(N), marked as holding the images' noise only."""
    rng = np.random.default_rng(1)
    reference = rng.random((1, 4000)) < 0.8
    other = reference.copy()
    flip = rng.random(4000) < 0.1
    other[0, flip] = ~other[0, flip]
    d = other[0].astype(float) - reference[0]
    interval = compare(reference, other, paired=True)
    assert interval.seed_noise == "images"
    half = t_quantile(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size) * 100
    assert interval.difference == pytest.approx(d.mean() * 100)
    assert (interval.high - interval.low) / 2 == pytest.approx(half)


def test_seeds_that_agree_closer_than_their_flips_allow_fall_back_to_the_images_term() -> None:
    """Every seed of `other` gets the same number of images wrong, but different ones: the
    per-seed differences agree exactly (s_d = 0), below what the flips alone give, so the
    variance is floored at its lower bound, the seed-averaged images' term."""
    rng = np.random.default_rng(2)
    reference = np.ones((3, 600), dtype=bool)
    other = np.ones((3, 600), dtype=bool)
    for row in other:
        row[rng.choice(600, 60, replace=False)] = False
    interval = compare(reference, other, paired=True)
    per_image = other.mean(axis=0) - reference.mean(axis=0)
    half = t_quantile(0.975, 599) * per_image.std(ddof=1) / math.sqrt(600) * 100
    assert interval.seed_noise == "seeds"
    assert interval.difference == pytest.approx(-10.0)
    assert (interval.high - interval.low) / 2 == pytest.approx(half)


def test_pooled_spread_is_the_df_weighted_mean_of_the_cells() -> None:
    rng = np.random.default_rng(3)
    cells = {
        "W4A4 lsq": (rng.random((3, 500)) < 0.9, rng.random((3, 500)) < 0.85),
        "W2A4 lsq": (rng.random((2, 500)) < 0.8, rng.random((2, 500)) < 0.9),
        "W8A8 lsq": (rng.random((1, 500)) < 0.9, rng.random((1, 500)) < 0.9),  # left out
    }
    pooled = pool_spreads(cells)
    assert pooled.cells == ("W4A4 lsq", "W2A4 lsq")
    assert pooled.df == 2 + 1
    variances, flips = [], []
    for reference, other in list(cells.values())[:2]:
        d = other.astype(float) - reference
        variances.append(d.mean(axis=1).var(ddof=1))
        residual = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0) + d.mean()
        flips.append((residual**2).sum() / ((len(d) - 1) * 499) / 500)
    assert pooled.seed_variance == pytest.approx((2 * variances[0] + variances[1]) / 3)
    assert pooled.flips == pytest.approx((2 * flips[0] + flips[1]) / 3)
    assert pool_spreads({"W8A8 lsq": cells["W8A8 lsq"]}) is None


def test_a_one_seed_cell_borrows_the_pooled_spread_and_says_so() -> None:
    rng = np.random.default_rng(4)
    reference = rng.random((1, 3000)) < 0.9
    other = rng.random((1, 3000)) < 0.88
    alone = compare(reference, other, paired=True)
    pooled = PooledSpread(seed_variance=4e-5, flips=1e-5, df=12, flips_df=36000, cells=("x",))
    borrowed = compare(reference, other, paired=True, pooled=pooled)
    assert (alone.seed_noise, borrowed.seed_noise) == ("images", "pooled")
    assert borrowed.difference == alone.difference
    assert borrowed.high - borrowed.low > alone.high - alone.low
    # the images' term plus the pooled seeds' part, 3e-5, whose 12 df set the quantile apart
    d = other[0].astype(float) - reference[0]
    variance = d.var(ddof=1) / d.size + 3e-5
    half = (borrowed.high - borrowed.low) / 2 / 100
    assert half == pytest.approx(t_quantile(0.975, borrowed.df) * math.sqrt(variance))
    assert 12 < borrowed.df < 3000
    # a pool whose spread is all flips adds nothing (its seeds' part is set to 0), but the
    # spread was still looked for: the cell is marked as borrowing
    flat = PooledSpread(seed_variance=1e-5, flips=2e-5, df=12, flips_df=36000, cells=("x",))
    nothing = compare(reference, other, paired=True, pooled=flat)
    assert nothing.seed_noise == "pooled"
    assert (nothing.low, nothing.high) == pytest.approx((alone.low, alone.high))


def test_unpaired_cells_add_each_methods_seed_term() -> None:
    """Different seeds: the seed means are independent, so each method's own seed variance
    over its seeds enters; a one-seed side borrows half the pooled (difference) spread."""
    rng = np.random.default_rng(5)
    skill = 0.85 + np.array([0.02, -0.03, 0.01])[:, None]  # a seed spread of 2.5 points
    reference = rng.random((3, 2000)) < skill
    other = rng.random((2, 2000)) < 0.86
    interval = compare(reference, other, paired=False)
    assert interval.seed_noise == "seeds"
    own = [side.mean(axis=1).var(ddof=1) / len(side) for side in (reference, other)]
    half = (interval.high - interval.low) / 2 / 100
    assert half > t_quantile(0.975, 1e9) * math.sqrt(own[0])  # at least the seeds' term
    single = compare(reference, other[:1], paired=False)
    assert single.seed_noise == "images"
    pooled = PooledSpread(seed_variance=2e-3, flips=0.0, df=8, flips_df=1e5, cells=("x",))
    borrowed = compare(reference, other[:1], paired=False, pooled=pooled)
    assert borrowed.seed_noise == "pooled"
    assert borrowed.high - borrowed.low > single.high - single.low
    # a small borrowed term with more df than the seeds' own would lower the Satterthwaite
    # quantile more than it adds variance; the interval does not narrow
    small = PooledSpread(seed_variance=2e-5, flips=0.0, df=40, flips_df=1e5, cells=("x",))
    barely = compare(reference, other[:1], paired=False, pooled=small)
    assert barely.high - barely.low >= single.high - single.low
    with pytest.raises(ValueError, match="same seeds"):
        compare(reference, other, paired=True)


def _expected_top1(skill: float, spread: float, mean_difficulty: float) -> float:
    """E[sigmoid(skill + u - b)] over u - b ~ N(-mean_difficulty, spread^2), by Gauss-Hermite
    quadrature: the accuracy the method has on average over seeds and test images."""
    nodes, weights = hermegauss(160)
    logits = skill - mean_difficulty + spread * nodes
    return float((weights / (1 + np.exp(-logits))).sum() / weights.sum())


@pytest.mark.parametrize(("paired", "correlation"), [(True, 0.5), (False, 0.0)])
def test_the_95_percent_interval_covers_the_true_difference(
    paired: bool, correlation: float
) -> None:
    """Each simulation draws a new test set (2000 images, per-image difficulty b_i and a
    per-method affinity c_mi) and 3 seeds per method (per-seed skill offset u, correlated
    between the two methods' runs of one seed when paired); a run is right on an image with
    probability sigmoid(skill + u - b + c). The truth is the difference of the methods'
    accuracies in expectation over seeds and images. The seeds move a run's top1 by 0.9
    points (sd; 0.1 logits), as much as the test images' noise of one run (0.9 points at
    2000 images and 79%), so both matter."""
    rng = np.random.default_rng(20261205)
    simulations, seeds, images = 500, 3, 2000
    skills, seed_spread, difficulty, difficulty_spread, affinity = (0.0, 0.15), 0.1, -2.5, 2.5, 0.7
    spread = math.sqrt(seed_spread**2 + difficulty_spread**2 + affinity**2)
    truth = 100 * (
        _expected_top1(skills[1], spread, difficulty)
        - _expected_top1(skills[0], spread, difficulty)
    )
    covered = 0
    for _ in range(simulations):
        b = rng.normal(difficulty, difficulty_spread, images)
        shared = rng.standard_normal(seeds)
        runs = []
        for skill in skills:
            own = rng.standard_normal(seeds)
            u = seed_spread * (math.sqrt(correlation) * shared + math.sqrt(1 - correlation) * own)
            logits = skill + u[:, None] - b + rng.normal(0, affinity, images)
            runs.append(rng.random((seeds, images)) < 1 / (1 + np.exp(-logits)))
        interval = compare(runs[0], runs[1], paired=paired)
        covered += interval.low <= truth <= interval.high
    coverage = covered / simulations
    print(f"coverage {coverage:.3f} over {simulations} simulations (paired={paired})")
    assert 0.92 <= coverage <= 0.98
