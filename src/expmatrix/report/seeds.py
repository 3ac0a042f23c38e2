"""How many seeds a question needs, from the seed-to-seed spread of the paired differences.

For a level compared with its baseline, the matched differences d(cell pair, seed) are grouped by
the other factors' levels (one group per cell pair). Their spread about each group's mean,
pooled over the groups (s, with sum(n_group - 1) degrees of freedom), is the seed noise of one
difference; the spread between the groups' means is a real interaction, not noise. From s, a
two-sided t-test at 1 - confidence and the stated power (noncentral t):

- the smallest difference the finished seeds resolve, for the marginal effect (every pair, pooled
  degrees of freedom, as the model's EMM contrast) and within one cell pair (its own seeds, n - 1
  degrees of freedom, as a row of an interaction table);
- the seeds per cell needed to resolve `difference` in each of those two comparisons.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import optimize, stats

from expmatrix.report.effects import levels_of, matched_pairs

MAX_SEEDS = 1000  # a search bound: beyond it the answer is "> 1000"


def power(delta: float, sd: float, n: int, df: int, alpha: float) -> float:
    """Probability that a two-sided one-sample t-test of n differences (sd `sd`, df `df`) rejects 0
    when the true mean difference is `delta`."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = delta * np.sqrt(n) / sd
    p = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    if not np.isfinite(p):  # scipy's noncentral t fails far in the tail: integrate over the sd estimate instead
        p = stats.chi(df, scale=1 / np.sqrt(df)).expect(
            lambda s: stats.norm.cdf(nc - crit * s) + stats.norm.cdf(-nc - crit * s)
        )
    return float(min(1.0, p))


def resolvable(sd: float, n: int, df: int, alpha: float, target: float) -> float:
    """The difference detected with probability `target` by n pairs."""
    hi = sd
    while power(hi, sd, n, df, alpha) < target:
        hi *= 2
    return float(optimize.brentq(lambda x: power(x, sd, n, df, alpha) - target, 0.0, hi, xtol=sd * 1e-6))


def seeds_needed(delta: float, sd: float, groups: int, alpha: float, target: float, pooled: bool) -> int | None:
    """Fewest seeds per cell (>= 2) that resolve `delta`: `groups` cell pairs pooled (df groups x (S - 1)),
    or one cell pair (df S - 1); None beyond MAX_SEEDS."""

    def enough(s: int) -> bool:
        n, df = (groups * s, groups * (s - 1)) if pooled else (s, s - 1)
        return power(delta, sd, n, df, alpha) >= target

    lo, hi = 2, 2
    while not enough(hi):
        if hi >= MAX_SEEDS:
            return None
        lo, hi = hi, min(2 * hi, MAX_SEEDS)
    while lo < hi:  # bisect: enough(hi) holds
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return hi


def seed_noise(pairs: pl.DataFrame, groups: list[str]) -> tuple[float | None, int]:
    """(pooled within-group sd of `d`, its degrees of freedom); None when no group has two seeds."""
    by = pairs.group_by(groups or pl.lit(0)).agg(((pl.col("d") - pl.col("d").mean()) ** 2).sum().alias("ss"), pl.len())
    df = int((by["len"] - 1).sum())
    return (float(np.sqrt(by["ss"].sum() / df)) if df > 0 else None), df


def seeds_frame(
    results: pl.DataFrame,
    factors: list[str],
    metric: str,
    baselines: dict[str, str],
    difference: float,
    confidence: float,
    target: float,
) -> pl.DataFrame:
    """Per compared level: pairs, cell pairs, seeds per cell pair, seed noise s, the smallest resolvable
    difference (marginal; one cell) and the seeds per cell needed for `difference` (marginal; one cell)."""
    alpha, rows = 1 - confidence, []
    for factor, baseline in baselines.items():
        others = [f for f in factors if f != factor]
        for level in levels_of(results, factor):
            if level == baseline:
                continue
            pairs, _ = matched_pairs(results, factors, metric, factor, level, baseline)
            sd, df = seed_noise(pairs, others)
            groups = pairs.select(others).unique().height if others else int(pairs.height > 0)
            row = {"factor": factor, "level": level, "baseline": baseline, "pairs": pairs.height, "cell_pairs": groups}
            row["seeds"] = pairs.height / groups if groups else None
            row["seed_sd"] = sd
            usable = sd is not None and sd > 0
            per_cell = max(2, round(row["seeds"] or 0))
            row["resolvable"] = resolvable(sd, pairs.height, df, alpha, target) if usable else None
            row["resolvable_cell"] = resolvable(sd, per_cell, per_cell - 1, alpha, target) if usable else None
            row["seeds_for_difference"] = seeds_needed(difference, sd, groups, alpha, target, True) if usable else None
            row["seeds_for_difference_cell"] = (
                seeds_needed(difference, sd, groups, alpha, target, False) if usable else None
            )
            rows.append(row)
    floats = ("seeds", "seed_sd", "resolvable", "resolvable_cell")
    ints = ("pairs", "cell_pairs", "seeds_for_difference", "seeds_for_difference_cell")
    types = dict.fromkeys(floats, pl.Float64) | dict.fromkeys(ints, pl.Int64)
    return pl.DataFrame(rows, schema_overrides=types, infer_schema_length=None)
