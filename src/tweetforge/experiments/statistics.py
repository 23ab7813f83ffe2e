"""The statistics of A/B experiments between model variants, on numpy and scipy only.

A variant is served `exposures` times (generations shown) and gets `conversions` (likes, say): each exposure
is a Bernoulli trial with the variant's unknown rate. In arena mode a "choice" event shows two generations
side by side and records which one won; each comparison is then a Bernoulli trial of "B won", and a variant's
win rate is wins / comparisons with the same interval as any other rate (`win_rate`).

What is here, from the simplest to the one the decision rests on:

- rates with Wilson score intervals (good at small counts and near 0 or 1, unlike the Wald interval);
- the classical two-proportion z-test, valid when the sample size is fixed in advance and the result is
  looked at once;
- Bayesian P(B beats A), P(each of k variants is best) and expected losses, under independent Beta
  posteriors, by deterministic quadrature;
- the mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh 2017, "Always valid
  inference"), whose p-value may be looked at after every batch of traffic without inflating false
  positives: peeking at a z-test every day and stopping at the first p < 0.05 does inflate them (see
  tests/test_ab_stats.py for the simulation);
- the per-variant sample size a fixed-horizon z-test needs to detect a given lift, used as the minimum
  sample before anything is promoted;
- `decide`, which puts these together: a winner is declared once the always-valid p-value is below alpha
  and both variants have at least the minimum sample.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

DEFAULT_TAU = 0.02
"""Default mixing standard deviation of the mSPRT: an absolute difference of 2 percentage points, the planned
minimum detectable effect of 10% -> 12% (a 20% relative lift). See `mixing_sd` for other baselines."""

QUADRATURE_NODES = 2048


@dataclass(frozen=True)
class Rate:
    """successes / trials with a Wilson score interval; rate is nan when there were no trials."""

    successes: int
    trials: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class ZTest:
    """Two-sided two-proportion z-test of B against A.

    z uses the pooled variance under the null (as statsmodels `proportions_ztest`); the interval for
    difference = rate_b - rate_a is the unpooled Wald interval, which does not assume the null."""

    z: float
    p_value: float
    difference: float
    low: float
    high: float


@dataclass(frozen=True)
class Bayes:
    """Independent Beta posteriors for the two rates. The expected loss of choosing a variant is how much rate
    is given up, on average over the posterior, if it is not the better one: E[max(pB - pA, 0)] for A."""

    p_b_beats_a: float
    expected_loss_a: float
    expected_loss_b: float


@dataclass(frozen=True)
class VariantHistory:
    """Cumulative counts of one variant at each look at the experiment, oldest first; the last look is now."""

    name: str
    exposures: Sequence[int]
    conversions: Sequence[int]


DecisionState = Literal["collecting", "winner", "no difference yet"]


@dataclass(frozen=True)
class ExperimentDecision:
    state: DecisionState
    winner: str | None
    """The variant to promote; set only when state == "winner"."""
    reason: str
    rates: dict[str, Rate]
    always_valid_p: float
    min_exposures: int
    ztest: ZTest | None
    """None while a variant has no exposures; for display only, since it is not valid under peeking."""
    bayes: Bayes


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def _z(confidence: float) -> float:
    return float(stats.norm.isf((1 - confidence) / 2))


def wilson_interval(conversions: int, exposures: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate; (0, 1) when there are no exposures (nothing is known)."""
    _check_counts(conversions, exposures)
    if exposures == 0:
        return 0.0, 1.0
    z2 = _z(confidence) ** 2
    p = conversions / exposures
    center = (p + z2 / (2 * exposures)) / (1 + z2 / exposures)
    half = math.sqrt(z2) * math.sqrt(p * (1 - p) / exposures + z2 / (4 * exposures**2)) / (1 + z2 / exposures)
    # At 0 or all conversions the bound is exactly 0 or 1; the formula leaves rounding dust there.
    low = 0.0 if conversions == 0 else max(0.0, center - half)
    high = 1.0 if conversions == exposures else min(1.0, center + half)
    return low, high


def rate_with_interval(successes: int, trials: int, confidence: float = 0.95) -> Rate:
    low, high = wilson_interval(successes, trials, confidence)
    return Rate(successes, trials, successes / trials if trials else math.nan, low, high)


def win_rate(wins: int, comparisons: int, confidence: float = 0.95) -> Rate:
    """Arena mode: each pairwise comparison is a Bernoulli trial of "this variant won", so the win rate is a
    binomial rate like any other. Ties should be left out of `comparisons` (or counted as half a win by the
    caller, which makes the interval slightly conservative). Between two variants the question is whether
    B's win rate differs from 1/2; the two variants' win rates are not independent samples (each comparison
    is a win for one and a loss for the other), so they are not for `two_proportion_ztest` or `decide`."""
    return rate_with_interval(wins, comparisons, confidence)


def two_proportion_ztest(conv_a: int, n_a: int, conv_b: int, n_b: int, confidence: float = 0.95) -> ZTest:
    """Two-sided z-test of rate_b == rate_a. When every trial of both variants had the same outcome the
    difference is exactly 0 and there is no evidence either way: z = 0, p = 1."""
    _check_counts(conv_a, n_a)
    _check_counts(conv_b, n_b)
    if n_a == 0 or n_b == 0:
        raise ValueError("both variants need at least one exposure")
    p_a, p_b = conv_a / n_a, conv_b / n_b
    pooled = (conv_a + conv_b) / (n_a + n_b)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (p_b - p_a) / se_null if se_null > 0 else 0.0
    half = _z(confidence) * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return ZTest(z, float(2 * stats.norm.sf(abs(z))), p_b - p_a, p_b - p_a - half, p_b - p_a + half)


@functools.cache
def _unit_gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on (0, 1); cached because computing 2048 of them takes longer than using them."""
    x, w = special.roots_legendre(nodes)
    return (x + 1) / 2, w / 2


def _posterior(conversions: int, exposures: int, prior: tuple[float, float]) -> tuple[float, float]:
    _check_counts(conversions, exposures)
    return prior[0] + conversions, prior[1] + exposures - conversions


def _gain_over(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """P(pB > pA) and E[max(pB - pA, 0)] for pA ~ Beta(*a), pB ~ Beta(*b) independent.

    Both are one-dimensional integrals over one rate of closed-form conditional expectations over the other,
    using x·Beta(x; α, β) = mean·Beta(x; α+1, β). Substituting that rate by its quantile u turns the integral
    into a smooth one over u in (0, 1), however peaked the posterior is; the narrower posterior is integrated
    so the other one's cdf varies slowly across the nodes. It agrees with the exact finite sum for integer
    parameters to ~2e-9, also when one posterior is 1000 times narrower than the other."""
    u, w = _unit_gauss_legendre(QUADRATURE_NODES)
    mean_a, mean_b = a[0] / (a[0] + a[1]), b[0] / (b[0] + b[1])
    if stats.beta.var(*a) <= stats.beta.var(*b):
        x = special.betaincinv(*a, u)  # pA at its quantiles; conditional on pA = x:
        p_beats = special.betaincc(*b, x)  # P(pB > x)
        gain = mean_b * special.betaincc(b[0] + 1, b[1], x) - x * p_beats  # E[max(pB - x, 0)]
    else:
        y = special.betaincinv(*b, u)  # pB at its quantiles; conditional on pB = y:
        p_beats = special.betainc(*a, y)  # P(pA < y)
        gain = y * p_beats - mean_a * special.betainc(a[0] + 1, a[1], y)  # E[max(y - pA, 0)]
    return float(w @ p_beats), float(max(w @ gain, 0.0))


def bayesian_comparison(conv_a: int, n_a: int, conv_b: int, n_b: int, prior: tuple[float, float] = (1.0, 1.0)) -> Bayes:
    """P(B beats A) and the expected loss of choosing each, with a Beta(prior) on each rate (uniform by
    default). Deterministic (Gauss-Legendre quadrature, see `_gain_over`)."""
    a, b = _posterior(conv_a, n_a, prior), _posterior(conv_b, n_b, prior)
    p_b_beats_a, loss_a = _gain_over(a, b)
    _, loss_b = _gain_over(b, a)
    return Bayes(p_b_beats_a, loss_a, loss_b)


def probability_best(conversions: ArrayLike, exposures: ArrayLike, prior: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """P(variant j has the highest rate) for each of k variants under independent Beta posteriors:
    ∫ f_j(x) ∏_{i≠j} F_i(x) dx, integrated over j's quantiles like `_gain_over` but without the choice of the
    narrower posterior: accurate to ~2e-9 while the posteriors' widths are within ~100x of each other, and to
    ~1e-4 at worst (a variant with no exposures against one with 10 million)."""
    conversions, exposures = np.asarray(conversions), np.asarray(exposures)
    for c, n in zip(conversions.tolist(), exposures.tolist()):
        _check_counts(c, n)
    alpha = prior[0] + conversions
    beta = prior[1] + exposures - conversions
    u, w = _unit_gauss_legendre(QUADRATURE_NODES)
    x = special.betaincinv(alpha[:, None], beta[:, None], u)  # (k, nodes): rate of variant j at its quantiles
    cdf = special.betainc(alpha[:, None, None], beta[:, None, None], x[None])  # (i, j, nodes): F_i(x_j)
    k = len(alpha)
    cdf[np.arange(k), np.arange(k)] = 1.0
    return cdf.prod(axis=0) @ w


def mixing_sd(baseline_rate: float, relative_lift: float) -> float:
    """The mSPRT mixing standard deviation τ for an experiment planned around this minimum detectable effect.

    With z² the squared z-statistic a true difference θ produces, the mixture likelihood ratio at one look is
    largest for τ² = V·(z² - 1) ≈ θ² - V, so τ = |θ| is close to the best choice for an effect of the planned
    size near the planned sample size, and still sensible for effects a few times larger or smaller."""
    return abs(baseline_rate * relative_lift)


def msprt_p_values(conv_a: ArrayLike, n_a: ArrayLike, conv_b: ArrayLike, n_b: ArrayLike, tau: float = DEFAULT_TAU) -> np.ndarray:
    """Always-valid p-values of the mSPRT for rate_b == rate_a, one per look.

    Inputs are cumulative counts with the looks on the last axis and any leading axes (many simulated
    experiments, say) broadcast. At each look, with θ̂ = p̂_B - p̂_A, V = p̂_A(1-p̂_A)/n_A + p̂_B(1-p̂_B)/n_B
    and a N(0, τ²) mixture over the true difference, the normal-approximation likelihood ratio is

        Λ = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))

    and the always-valid p-value is the running minimum of min(1, 1/Λ). Where V = 0 (no exposures yet, or
    every trial with the same outcome) there is no evidence: Λ = 1."""
    conv_a, n_a, conv_b, n_b = (np.asarray(v, dtype=float) for v in (conv_a, n_a, conv_b, n_b))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_a, p_b = conv_a / n_a, conv_b / n_b
        v = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    return _msprt(p_b - p_a, v, (n_a > 0) & (n_b > 0), tau)


def _msprt(theta: np.ndarray, v: np.ndarray, observed: np.ndarray, tau: float) -> np.ndarray:
    """Running always-valid p-values from the estimated difference and its variance at each look."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tau2 = tau * tau
        log_lr = 0.5 * np.log(v / (v + tau2)) + tau2 * theta**2 / (2 * v * (v + tau2))
    log_lr = np.where(observed & (v > 0), log_lr, 0.0)
    # exp(-max(log Λ, 0)) = min(1, 1/Λ) without overflowing Λ on decisive data.
    return np.minimum.accumulate(np.exp(-np.maximum(log_lr, 0.0)), axis=-1)


ARENA_TAU = 0.1
"""Mixing sd for arena win rates: planned around a 60/40 preference."""


def arena_p_values(wins: ArrayLike, comparisons: ArrayLike, tau: float = ARENA_TAU) -> np.ndarray:
    """Always-valid p-values that a variant's pairwise win rate is 1/2, one per look (cumulative counts).

    In an arena every comparison is a win for one variant and a loss for the other, so the two win rates are
    one number, not two independent proportions: the one-sample mSPRT on w = wins / comparisons, with
    θ̂ = w - 1/2 and V = w(1 - w) / comparisons."""
    wins, comparisons = np.asarray(wins, dtype=float), np.asarray(comparisons, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = wins / comparisons
        v = w * (1 - w) / comparisons
    return _msprt(w - 0.5, v, comparisons > 0, tau)


def always_valid_p_value(conv_a: Sequence[int], n_a: Sequence[int], conv_b: Sequence[int], n_b: Sequence[int],
                         tau: float = DEFAULT_TAU) -> float:
    """The always-valid p-value now, from the cumulative counts at every look so far (oldest first)."""
    if not len(conv_a) == len(n_a) == len(conv_b) == len(n_b) > 0:
        raise ValueError("need the same, non-zero number of looks for every count")
    return float(msprt_p_values(conv_a, n_a, conv_b, n_b, tau)[-1])


def required_sample_size(baseline_rate: float, relative_lift: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Exposures per variant for a two-sided two-proportion z-test at level alpha to detect
    rate_b = baseline · (1 + relative_lift) with the given power (Fleiss; statsmodels'
    `samplesize_proportions_2indep_onetail`):

        n = ( z_{1-α/2} · sqrt(2 p̄ (1 - p̄)) + z_power · sqrt(p_a (1 - p_a) + p_b (1 - p_b)) )² / (p_b - p_a)²

    with p̄ the mean of the two rates: the test statistic's spread under the null uses the pooled rate, under
    the alternative the two rates. The far tail of the two-sided test is ignored (negligible). Rounded up."""
    p_a, p_b = baseline_rate, baseline_rate * (1 + relative_lift)
    if not (0 < p_a < 1 and 0 < p_b < 1 and p_a != p_b):
        raise ValueError(f"need two different rates in (0, 1), got {p_a} and {p_b}")
    p_bar = (p_a + p_b) / 2
    spread = _z(1 - alpha) * math.sqrt(2 * p_bar * (1 - p_bar)) + stats.norm.ppf(power) * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    return math.ceil(spread**2 / (p_b - p_a) ** 2)


def decide(a: VariantHistory, b: VariantHistory, *, min_exposures: int, alpha: float = 0.05, tau: float = DEFAULT_TAU,
           prior: tuple[float, float] = (1.0, 1.0)) -> ExperimentDecision:
    """Whether the experiment between variants a and b has a winner now.

    The decision rests on the always-valid p-value alone, so it may be asked after every look: "winner" once
    p < alpha and both variants have at least `min_exposures` (typically `required_sample_size` for the
    planned lift: it keeps a lucky early streak on a handful of exposures from promoting anything), the
    winner being the variant with the higher rate now. Below the minimum the state is "collecting" whatever
    p says; above it and p >= alpha, "no difference yet". The z-test and Bayesian numbers are for display.
    The variants' counts must be independent samples (separate exposures), which arena wins are not."""
    if not len(a.exposures) == len(a.conversions) == len(b.exposures) == len(b.conversions) > 0:
        raise ValueError("both variants need counts at the same, non-zero number of looks")
    rates = {v.name: rate_with_interval(v.conversions[-1], v.exposures[-1]) for v in (a, b)}
    if len(rates) != 2:
        raise ValueError(f"the two variants need different names, got {a.name!r} twice")
    p = always_valid_p_value(a.conversions, a.exposures, b.conversions, b.exposures, tau)
    (conv_a, n_a), (conv_b, n_b) = (a.conversions[-1], a.exposures[-1]), (b.conversions[-1], b.exposures[-1])
    ztest = two_proportion_ztest(conv_a, n_a, conv_b, n_b) if n_a and n_b else None
    bayes = bayesian_comparison(conv_a, n_a, conv_b, n_b, prior)
    leader = None if conv_a * n_b == conv_b * n_a else (b.name if conv_b * n_a > conv_a * n_b else a.name)

    state: DecisionState
    if min(n_a, n_b) < min_exposures:
        state, winner = "collecting", None
        reason = f"{min(n_a, n_b)} of the minimum {min_exposures} exposures per variant (always-valid p = {p:.3g})"
    elif p < alpha and leader is not None:
        state, winner = "winner", leader
        reason = f"{leader} has the higher rate, always-valid p = {p:.3g} < {alpha:g}, minimum sample reached"
    else:
        state, winner = "no difference yet", None
        reason = f"always-valid p = {p:.3g} >= {alpha:g}" if p >= alpha else "conclusive earlier, but the rates are equal now"
    return ExperimentDecision(state, winner, reason, rates, p, min_exposures, ztest, bayes)
