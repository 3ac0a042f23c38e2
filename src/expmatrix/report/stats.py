"""Statistics of matched-pair differences: bootstrap confidence interval and paired tests.

The p-value a report shows is the two-sided Wilcoxon signed-rank test. The pairs of one
comparison pool cells whose effects differ (binned - direct under cls, mean, max pooling,
with and without MET, ...), so the differences are a mixture, often skewed by a cell that
did not train; the signed-rank test needs no normality, the paired t-test does. The t-test
p-value is kept beside it (CSV) as a cross-check. With n pairs the smallest Wilcoxon p-value
is 2 / 2**n: two seeds of one cell cannot be significant, however large the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedStats:
    n: int  # matched pairs
    mean: float | None  # mean difference
    std: float | None  # of the differences (ddof 1)
    ci_low: float | None  # bootstrap percentile interval of the mean difference
    ci_high: float | None
    p_wilcoxon: float | None  # two-sided signed-rank
    p_ttest: float | None  # two-sided paired t


def bootstrap_ci(
    d: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of the mean of `d`, resampling the pairs with replacement (fixed seed)."""
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


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


def paired_stats(d: np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> PairedStats:
    """Everything a report says about matched differences `d` (shape [n_pairs])."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n == 0:
        return PairedStats(0, None, None, None, None, None, None)
    if n == 1:
        return PairedStats(1, float(d[0]), None, None, None, None, None)
    low, high = bootstrap_ci(d, confidence, resamples, seed)
    return PairedStats(n, float(d.mean()), float(d.std(ddof=1)), low, high, wilcoxon_p(d), ttest_p(d))
