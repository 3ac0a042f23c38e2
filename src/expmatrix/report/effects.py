"""Numbers of a report, as polars frames: cell statistics, factor effects, interactions.

Every frame is computed from finished jobs only; the `results` frame passed in holds every
job of the matrix (any state) so that what is missing can be counted. A marginal mean of a
level is the mean of its cells' means (each cell weighs the same, whatever its seed count).
A paired difference matches a job with the baseline level's job that has the same level of
every other factor and the same seed.
"""

from __future__ import annotations

import polars as pl

from expmatrix.report.stats import StatsSettings, paired_stats, prob_better, wins_of


def finished(results: pl.DataFrame) -> pl.DataFrame:
    return results.filter(pl.col("state") == "done")


def levels_of(results: pl.DataFrame, factor: str) -> list[str]:
    """Levels in matrix order (the order of the jobs)."""
    return results[factor].unique(maintain_order=True).to_list()


def cell_stats(
    results: pl.DataFrame, factors: list[str], metrics: list[str], primary: str, higher: bool
) -> pl.DataFrame:
    """One row per cell with a finished job, best first by `primary`.

    Columns: the factors, `<metric> mean|std|n` per metric (n counts jobs where the metric is
    defined), `jobs`, `seeds`, `params`, `train_seconds`, the best seed's `best_job`, and the mean codebook
    health (`codebook.utilisation`, ...) where a VQ job recorded it.
    """
    done = finished(results)
    aggs = [pl.col(c).mean() for c in done.columns if c.startswith("codebook.")]
    for m in metrics:
        aggs += [
            pl.col(m).mean().alias(f"{m} mean"),
            pl.col(m).std().alias(f"{m} std"),
            pl.col(m).count().alias(f"{m} n"),
        ]
    best = pl.col(primary).arg_max() if higher else pl.col(primary).arg_min()
    return (
        done.group_by(factors, maintain_order=True)
        .agg(
            *aggs,
            pl.len().alias("jobs"),
            pl.col("seed").sort().alias("seeds"),
            pl.col("params").mean().round(0).cast(pl.Int64).alias("params"),
            pl.col("train_seconds").mean().alias("train_seconds"),
            pl.col("job").get(best).alias("best_job"),
            pl.col("seed").get(best).alias("best_seed"),
        )
        .sort(f"{primary} mean", descending=higher, nulls_last=True, maintain_order=True)
    )


def matched_pairs(
    results: pl.DataFrame, factors: list[str], metric: str, factor: str, level: str, baseline: str
) -> tuple[pl.DataFrame, int]:
    """(finished matched pairs: the other factors' levels, seed and `d` = metric(level) - metric(baseline),
    pairs the matrix holds in all)."""
    keys = [f for f in factors if f != factor] + ["seed"]

    def side(frame: pl.DataFrame, lv: str, name: str) -> pl.DataFrame:
        return frame.filter(pl.col(factor) == lv).select(*keys, pl.col(metric).alias(name))

    expected = side(results, level, "a").join(side(results, baseline, "b"), on=keys).height
    done = finished(results).filter(pl.col(metric).is_not_null())
    pairs = side(done, level, "a").join(side(done, baseline, "b"), on=keys)
    return pairs.select(*keys, (pl.col("a") - pl.col("b")).alias("d")), expected


def factor_effects(
    results: pl.DataFrame,
    factors: list[str],
    metric: str,
    factor: str,
    baseline: str,
    settings: StatsSettings,
    higher: bool = True,
) -> pl.DataFrame:
    """Per level of `factor`: marginal mean over its cells, the paired difference to `baseline`, and the
    probability that the level beats the baseline in a matched pair (`higher`: the metric's better direction)."""
    done = finished(results).filter(pl.col(metric).is_not_null())
    cells = done.group_by(factors).agg(pl.col(metric).mean().alias("cell_mean"))
    all_cells = results.select(factors).unique()
    rows = []
    for level in levels_of(results, factor):
        level_cells = cells.filter(pl.col(factor) == level)["cell_mean"]
        pairs, expected = matched_pairs(results, factors, metric, factor, level, baseline)
        s = paired_stats(pairs["d"].to_numpy(), settings)
        tested = level != baseline  # the baseline against itself: Δ 0, no test
        better = (None,) * 3
        if tested and s.n:
            better = tuple(float(x) for x in prob_better(wins_of(pairs["d"].to_numpy(), higher), settings.confidence))
        rows.append(
            {
                "factor": factor,
                "level": level,
                "baseline": baseline,
                "is_baseline": level == baseline,
                "marginal": level_cells.mean() if len(level_cells) else None,
                "cells": len(level_cells),
                "cells_expected": all_cells.filter(pl.col(factor) == level).height,
                "pairs": s.n,
                "pairs_expected": expected,
                "delta": s.mean,
                "delta_std": s.std,
                "ci_low": s.ci_low,
                "ci_high": s.ci_high,
                "p": s.p if tested else None,
                "p_wilcoxon": s.p_wilcoxon if tested else None,
                "p_ttest": s.p_ttest if tested else None,
                **dict(zip(("p_better", "p_better_low", "p_better_high"), better, strict=True)),
            }
        )
    floats = ("marginal", "delta", "delta_std", "ci_low", "ci_high", "p", "p_wilcoxon", "p_ttest")
    floats += ("p_better", "p_better_low", "p_better_high")
    return pl.DataFrame(rows, schema_overrides=dict.fromkeys(floats, pl.Float64), infer_schema_length=None)


def interaction(
    results: pl.DataFrame,
    factors: list[str],
    metric: str,
    factor: str,
    baseline: str,
    by: str,
    settings: StatsSettings,
    higher: bool = True,
) -> pl.DataFrame:
    """The effects of `factor` within each level of `by`: does the answer depend on `by`?

    Columns: `by` level (as column `by_level`) then those of `factor_effects`.
    """
    rest = [f for f in factors if f != by]
    parts = []
    for lv in levels_of(results, by):
        sub = results.filter(pl.col(by) == lv)
        effects = factor_effects(sub, rest, metric, factor, baseline, settings, higher)
        parts.append(effects.select(pl.lit(by).alias("by"), pl.lit(lv).alias("by_level"), pl.all()))
    return pl.concat(parts)
