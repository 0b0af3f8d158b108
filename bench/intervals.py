"""95% intervals for "method minus GDRQ" that hold both the test images' and the seeds' noise.

Each method's runs give a (seeds x images) array of right/wrong on the same test images. The
quantity estimated is the expected top1 difference over training seeds and over the test
distribution's images; the estimate is the difference of the two methods' seed-averaged top1
on the test images. It varies with the seeds drawn and with the test images drawn, and seeds
and images are crossed (every run sees every image), so for n seeds and N images its
variance has three parts (a two-way random-effects layout):

    Var = sigma_seed^2 / n  +  sigma_image^2 / N  +  sigma_flip^2 / (n N)

where sigma_flip^2 is the seed x image interaction: a run's own right/wrong flips on single
images. With D[s, i] the per-image difference of the two runs of seed s (paired by seed
index: both runs of a seed share its randomness), the ANOVA mean squares of D estimate it
without bias:

    Var_hat = s_d^2 / n  +  (s_img^2 / N - MS_flip / (n N))

s_d^2 is the sample variance of the per-seed differences d_s (the seeds' term, n - 1 df);
s_img^2 that over images of the seed-averaged difference (N - 1 df) and MS_flip the residual
mean square of D ((n - 1)(N - 1) df). Both s_d^2 and s_img^2 hold the flips, so the sum of
the two alone would count them twice (on the bench's ResNet-20 rows most of s_d^2); they are
taken off the images' term, which N - 1 df estimate precisely (a net term below 0 is set to
0). The seeds' term, known to n - 1 df only, is used as measured and its uncertainty goes
into the quantile. One bound is known, though: s_img^2 / N alone estimates the variance of
the estimate given the seeds, averaged over seeds, which the total cannot be below; where
Var_hat comes out below it (the seeds agreeing more closely than their own flips allow, by
chance), the interval is that of the images' term. When the two methods were run with
different seeds, their seed means are independent: each method's own s^2 / n_m is a seeds'
term and the images' term is taken net of both methods' flips.

The interval is estimate +- t(0.975, df) sqrt(Var_hat), df the Welch-Satterthwaite effective
degrees of freedom of that sum (`satterthwaite`, with the seeds' term at an upper bound):
with 3 seeds, where the seeds' term dominates the quantile approaches t(0.975, 2) = 4.30,
where the images' term dominates the normal 1.96. A bootstrap over 3 seeds has no such
correction: resampling 3 values shrinks their variance by (n - 1) / n and its percentiles
have no heavier tails, so its intervals undercover. Simulated (the model of
tests/test_intervals.py: images of random difficulty, per-seed skill around each method's,
Bernoulli right/wrong, n = 3, N = 2000, images and seeds drawn anew each time; 2000-3000
draws per setting), the 95% intervals covered the true difference in 93-97% of draws paired
and 95-97% unpaired, from seeds that add nothing beyond their flips (97%) to seeds whose
term is 7 times s_img^2 / N (93-94%). scipy is not a dependency of the project, so the t
quantile is computed here from the regularized incomplete beta function.

A comparison with one seed on a side cannot estimate its own seeds' part: it borrows a
`PooledSpread` (the seeds' part of the per-seed difference, net of the flips, pooled over
other comparisons with several seeds as a pooled variance is, df the sum of theirs; set to
0 where below), or, given none, holds the test images' noise only; `Interval.seed_noise`
says which. Its own flips stay in its images' term (with one seed they are in no seeds'
term). A borrowed term never narrows the interval (Welch-Satterthwaite's df can grow faster
than the variance when a small term with more df is added; the interval without it is kept
then).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

CONFIDENCE = 0.95
SeedNoise = Literal["seeds", "pooled", "images"]


@dataclass(frozen=True)
class Interval:
    """A difference in points (other minus reference) with its interval and the effective
    df of its t quantile; `seed_noise` says how the seeds' noise entered: measured on the
    comparison's own seeds ("seeds"), borrowed for a one-seed side from a PooledSpread
    ("pooled"), or missing for a one-seed side ("images": the test images' noise only)."""

    difference: float
    low: float
    high: float
    seed_noise: SeedNoise
    df: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class PooledSpread:
    """The seeds' part of a per-seed difference (proportion^2, one seed each), pooled over
    comparisons with >= 2 seeds: `seed_variance` is the df-weighted mean of their s_d^2 (df
    `df`), `flips` that of their MS_flip / N (df `flips_df`), the part of s_d^2 that the
    per-image flips alone give; `cells` names the comparisons pooled."""

    seed_variance: float
    flips: float
    df: float
    flips_df: float
    cells: tuple[str, ...]

    @property
    def component(self) -> float:
        """sigma_seed^2 of the difference, set to 0 where estimated below."""
        return max(self.seed_variance - self.flips, 0.0)


@dataclass(frozen=True)
class _Decomposition:
    """Mean squares of one (seeds x images) array on the scale of one seed's mean: `seed` =
    s^2 of the row means (MS_seed / images, df seeds - 1) and `flips` = MS_flip / images,
    MS_flip the residual (seed x image) mean square (df (seeds - 1)(images - 1))."""

    seeds: int
    images: int
    seed: float
    flips: float


def _decompose(values: np.ndarray) -> _Decomposition:
    seeds, images = values.shape
    row_means = values.mean(axis=1)
    residual = values - row_means[:, None] - values.mean(axis=0)[None, :] + values.mean()
    flips_ms = float((residual**2).sum()) / ((seeds - 1) * (images - 1))
    return _Decomposition(seeds, images, float(row_means.var(ddof=1)), flips_ms / images)


# A term of the variance: (value, degrees of freedom); a negative value is subtracted.
Term = tuple[float, float]


def _net(positive: Term, subtracted: list[Term]) -> list[Term]:
    """positive - sum(subtracted) as terms, or none where that is not > 0 (a variance
    component estimated below 0 is set to 0)."""
    if positive[0] - sum(value for value, _ in subtracted) <= 0:
        return []
    return [positive, *((-value, df) for value, df in subtracted)]


def chi2_quantile(p: float, df: float) -> float:
    """The p quantile of chi^2 with df degrees of freedom, by the Wilson-Hilferty cube-root
    approximation (at p = 0.3, as `satterthwaite` uses it, within 2.1% of the exact value for
    any df >= 1; 7% at p = 0.1, 2 df)."""
    h = 2.0 / (9.0 * df)
    return df * max(1.0 - h + NormalDist().inv_cdf(p) * math.sqrt(h), 0.0) ** 3


DF_BOUND = 0.3


def satterthwaite(terms: Sequence[Term], bound: float | None = DF_BOUND) -> float:
    """Effective degrees of freedom of a sum of independent mean-square terms, each with its
    own df: (sum v)^2 / sum(v^2 / df), at least 1.

    With `bound`, each positive term enters at its upper confidence bound v df / chi2(bound,
    df) (a 70% bound by default) rather than at its estimate. Plain Welch-Satterthwaite
    plugs in the estimates, and with a 2-df seeds' term beside a nearly exact images' term
    that is liberal: when the seeds' term comes out small by chance, its share and so the df
    are overstated just when the variance is understated (simulated coverage of a nominal
    95% interval dips to 92%). At the 70% bound the same simulations cover 94-96% for any
    ratio of the two terms; terms with many df are left as they are."""
    used = [
        (value * df / chi2_quantile(bound, df) if bound and value > 0 else value, df)
        for value, df in terms
    ]
    denominator = sum(value**2 / df for value, df in used)
    if denominator == 0:
        return math.inf
    total = sum(value for value, _ in used)
    return max(total**2 / denominator, 1.0)


def pool_spreads(cells: dict[str, tuple[np.ndarray, np.ndarray]]) -> PooledSpread | None:
    """Pool the seeds' part of the per-seed difference over comparisons given as
    {name: (reference, other)}, each pair (seeds x images) paired by row; those with < 2
    seeds are left out. None where none is left."""
    used = {name: pair for name, pair in cells.items() if len(pair[0]) >= 2}
    if not used:
        return None
    parts = [_decompose(other.astype(float) - reference) for reference, other in used.values()]
    df = sum(p.seeds - 1 for p in parts)
    return PooledSpread(
        seed_variance=sum((p.seeds - 1) * p.seed for p in parts) / df,
        flips=sum((p.seeds - 1) * p.flips for p in parts) / df,
        df=df,
        flips_df=sum((p.seeds - 1) * (p.images - 1) for p in parts),
        cells=tuple(used),
    )


def compare(
    reference: np.ndarray,
    other: np.ndarray,
    paired: bool,
    pooled: PooledSpread | None = None,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Other's top1 minus reference's (seed means, in points) with its interval.

    `reference` and `other` are (seeds x images) booleans on the same images; `paired`: row s
    of both is the same seed (same shape), else the seed means are independent. A side with
    one seed takes its seeds' part from `pooled` (paired: the pooled part of a one-seed
    difference; unpaired: half of it for that side, as if the two runs of a pooled
    difference were independent with equal spreads), else the interval holds the test
    images' noise only."""
    if reference.shape[1] != other.shape[1]:
        raise ValueError("the two methods must be evaluated on the same images")
    if paired and reference.shape != other.shape:
        raise ValueError("paired runs need the same seeds on both sides")
    images = reference.shape[1]
    difference = float(other.mean() - reference.mean())
    image_mean = other.mean(axis=0) - reference.mean(axis=0)
    image_term: Term = (float(image_mean.var(ddof=1)) / images, images - 1)
    # own: each seeds' term measured on this comparison's own seeds, with the share of the
    # per-image flips that it holds (taken off the images' term); borrowed: from `pooled`.
    own: list[tuple[Term, Term]] = []
    borrowed: list[Term] = []
    sides = [other.astype(float) - reference] if paired else [reference, other]
    for side in sides:
        seeds = len(side)
        if seeds >= 2:
            parts = _decompose(side.astype(float))
            flips_df = (seeds - 1) * (images - 1)
            own.append(((parts.seed / seeds, seeds - 1), (parts.flips / seeds, flips_df)))
        elif pooled is not None:
            share = 1.0 if paired else 2.0
            borrowed += _net(
                (pooled.seed_variance / share, pooled.df),
                [(pooled.flips / share, pooled.flips_df)],
            )
    seed_noise: SeedNoise = "seeds"
    if min(len(reference), len(other)) < 2:
        seed_noise = "pooled" if pooled is not None else "images"
    measured = [seed for seed, _ in own] + _net(image_term, [flips for _, flips in own])
    half, df = _half_width(measured, image_term, confidence)
    if borrowed:  # borrowing adds noise; with its own df it could narrow the interval
        half, df = max(_half_width(measured + borrowed, image_term, confidence), (half, df))
    return Interval(
        difference * 100, (difference - half) * 100, (difference + half) * 100, seed_noise, df
    )


def _half_width(terms: list[Term], image_term: Term, confidence: float) -> tuple[float, float]:
    """(half-width, df) of the interval on the sum of `terms`, floored at the images' term
    (its lower bound: the variance given the seeds, averaged over them)."""
    if sum(value for value, _ in terms) < image_term[0]:
        terms = [image_term]
    variance = sum(value for value, _ in terms)
    if variance <= 0:  # the two methods agree on every image in every run
        return 0.0, math.inf
    df = satterthwaite(terms)
    return t_quantile((1 + confidence) / 2, df) * math.sqrt(variance), df


# Student's t distribution, from the regularized incomplete beta function (Numerical
# Recipes' continued fraction, evaluated by the modified Lentz method).
_TINY = 1e-300
_EPSILON = 1e-15


def _beta_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, 100_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            fraction *= c * d
        if abs(c * d - 1.0) < _EPSILON:
            return fraction
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):  # where the fraction converges fast; else by symmetry
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df (> 0, may be fractional or inf) degrees of freedom:
    P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2)."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with df degrees of freedom (bisection on t_cdf, to
    1e-10 relative)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must lie in (0, 1)")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if math.isinf(df) or df > 1e7:
        return NormalDist().inv_cdf(p)
    low, high = 0.0, max(NormalDist().inv_cdf(p), 1.0)
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    while high - low > 1e-10 * high:
        middle = (low + high) / 2.0
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2.0
