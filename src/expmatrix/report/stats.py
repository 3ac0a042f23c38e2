"""Statistics of matched-pair differences: intervals that keep their coverage, paired tests, adjusted p.

The default interval is Student t: with n pairs of normal differences it covers the mean
difference at its stated level for every n >= 2 (simulated here, 2,000 repetitions: 94-95% at
n = 2..24), where the percentile bootstrap covers 53% at 2 pairs, 80% at 4 and 93% at 24. The
bootstrap intervals (`percentile`, `bca`) stay as options for many pairs; below `min_pairs` (by
default the interval's own minimum, `MIN_PAIRS`) no interval is printed, only the mean.

The p-value beside an interval is the test that agrees with it: the paired t-test for `t` (the
interval excludes 0 exactly when p < 1 - confidence), the Wilcoxon signed-rank test for the
bootstrap ones. Both p-values are kept in the CSVs.

The probability of improvement P(better) of a level over its baseline is the share of matched pairs the level
wins (a tie counts half), with a Clopper-Pearson interval. Each pair is a Bernoulli trial with its own chance
(cells differ), so the count is Poisson-binomial, less spread than the binomial of the same mean (Hoeffding
1956): the exact binomial interval keeps at least its stated coverage of the mean chance over the pairs for
every number of pairs (simulated, 2,000 repetitions: 96-100% at n = 2..24, cells of unequal chances included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Interval = Literal["t", "percentile", "bca"]
Correction = Literal["none", "holm", "bh"]

# Fewest pairs for which an interval keeps (nearly) its stated 95% coverage on normal differences.
MIN_PAIRS: dict[str, int] = {"t": 2, "percentile": 20, "bca": 20}


@dataclass(frozen=True)
class StatsSettings:
    confidence: float = 0.95
    resamples: int = 10_000
    seed: int = 0  # of the bootstrap: the same results give the same intervals
    interval: Interval = "t"
    min_pairs: int | None = None  # None: MIN_PAIRS[interval]

    @property
    def fewest(self) -> int:
        return self.min_pairs if self.min_pairs is not None else MIN_PAIRS[self.interval]


@dataclass(frozen=True)
class PairedStats:
    n: int  # matched pairs
    mean: float | None  # mean difference
    std: float | None  # of the differences (ddof 1)
    ci_low: float | None  # interval of the mean difference; None below the minimum number of pairs
    ci_high: float | None
    p: float | None  # the test that goes with the interval (t: paired t; bootstrap: Wilcoxon)
    p_wilcoxon: float | None  # two-sided signed-rank
    p_ttest: float | None  # two-sided paired t


def t_interval(d: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean over the last axis of `d` (vectorised: [..., n] -> two [...])."""
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * d.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean - half, mean + half


def bootstrap_ci(
    d: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of `d`, resampling the pairs with replacement (fixed seed)."""
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def bca_ci(d: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval of the mean (scipy), fixed seed."""
    res = stats.bootstrap(
        (d,), np.mean, confidence_level=confidence, n_resamples=resamples, method="BCa", random_state=seed
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval(d: np.ndarray, s: StatsSettings) -> tuple[float, float]:
    """The settings' interval of the mean of `d` (at least 2 values); degenerate when `d` has no spread."""
    if np.ptp(d) == 0:
        return float(d[0]), float(d[0])
    if s.interval == "t":
        low, high = t_interval(d, s.confidence)
        return float(low), float(high)
    return (bootstrap_ci if s.interval == "percentile" else bca_ci)(d, s.confidence, s.resamples, s.seed)


def prob_better(wins: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(better) over the last axis of `wins` (1 win, 0.5 tie, 0 loss; [..., n] -> three [...]): the share won
    and its Clopper-Pearson interval (the beta quantiles of the binomial; a tie's half-win keeps them defined)."""
    n = wins.shape[-1]
    k = wins.sum(axis=-1)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, np.maximum(k, 1e-12), n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-12)), 1.0)
    return k / n, low, high


def wins_of(d: np.ndarray, higher: bool) -> np.ndarray:
    """1 where the level beat its baseline in a pair (difference `d` in the metric's better direction), 0.5 for
    a tie, 0 for a loss."""
    return 0.5 + 0.5 * np.sign(d if higher else -d)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided signed-rank p-value; all-zero differences give 1 (no evidence of a difference)."""
    if not np.any(d):
        return 1.0
    return float(stats.wilcoxon(d).pvalue)


def ttest_p(d: np.ndarray) -> float | None:
    """Two-sided paired t p-value; None when the differences have no spread."""
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else None
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def paired_stats(d: np.ndarray, s: StatsSettings = StatsSettings()) -> PairedStats:
    """Everything a report says about matched differences `d` (shape [n_pairs])."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n == 0:
        return PairedStats(0, None, None, None, None, None, None, None)
    if n == 1:
        return PairedStats(1, float(d[0]), None, None, None, None, None, None)
    low, high = interval(d, s) if n >= s.fewest else (None, None)
    p_w, p_t = wilcoxon_p(d), ttest_p(d)
    return PairedStats(n, float(d.mean()), float(d.std(ddof=1)), low, high, p_t if s.interval == "t" else p_w, p_w, p_t)


def adjust(p: list[float | None], method: Correction) -> list[float | None]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted p-values of one
    family; None (no test) stays None and does not count as a comparison."""
    idx = [i for i, x in enumerate(p) if x is not None]
    if method == "none" or not idx:
        return list(p)
    values = np.array([p[i] for i in idx], dtype=np.float64)
    m = len(values)
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adj = np.minimum.accumulate(np.minimum(1.0, ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out = list(p)
    for rank, i in enumerate(order):
        out[idx[i]] = float(adj[rank])
    return out
