"""Report frames -> `Table`s: formatted text cells, which cells are bold, notes; no output format yet."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from expmatrix.metrics import higher_is_better


@dataclass
class Table:
    name: str  # file stem of its CSV/LaTeX fragment: cells, effects, ranking, interaction_<a>__<b>
    title: str
    headers: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of the best values
    notes: list[str] = field(default_factory=list)


def decimals(values: list[float | None]) -> int:
    """4 decimals for metrics below 10 (AUROC, efficiencies, Brier), 2 for larger ones (rejections)."""
    return 2 if any(v is not None and abs(v) >= 10 for v in values) else 4


def fmt(x: float | None, dec: int = 4, sign: bool = False) -> str:
    return "n/a" if x is None else f"{x:{'+' if sign else ''}.{dec}f}"


def mean_std(mean: float | None, std: float | None, dec: int) -> str:
    return fmt(mean, dec) + (f" ± {fmt(std, dec)}" if std is not None and mean is not None else "")


def _best_row(values: list[float | None], higher: bool) -> int | None:
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if not present:
        return None
    return (max if higher else min)(present)[1]


def direction(metric: str, override: dict[str, bool]) -> bool:
    return override.get(metric, higher_is_better(metric))


def cells_table(stats: pl.DataFrame, factors: list[str], metrics: list[str], higher: dict[str, bool]) -> Table:
    """One row per cell: levels, mean ± std of each metric, seeds finished, params, training time."""
    headers = (
        factors + [f"{m} (mean ± std)" if j == 0 else m for j, m in enumerate(metrics)] + ["n", "params", "train s"]
    )
    dec = {m: decimals(stats[f"{m} mean"].to_list()) for m in metrics}
    rows = [
        [str(r[f]) for f in factors]
        + [mean_std(r[f"{m} mean"], r[f"{m} std"], dec[m]) for m in metrics]
        + [str(r["jobs"]), str(r["params"]), f"{r['train_seconds']:.1f}"]
        for r in stats.iter_rows(named=True)
    ]
    bold = set()
    for j, m in enumerate(metrics):
        best = _best_row(stats[f"{m} mean"].to_list(), direction(m, higher))
        if best is not None:
            bold.add((best, len(factors) + j))
    lower = [m for m in metrics if not direction(m, higher)]
    notes = ["Best value of each metric in bold."] + ([f"Lower is better: {', '.join(lower)}."] if lower else [])
    return Table("cells", "Cells: mean ± std over seeds, best first", headers, rows, bold, notes)


def _delta_ci(r: dict, dec: int) -> str:
    if r["delta"] is None:
        return "no pairs"
    ci = f" [{fmt(r['ci_low'], dec, True)}, {fmt(r['ci_high'], dec, True)}]" if r["ci_low"] is not None else ""
    return fmt(r["delta"], dec, True) + ci


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


EFFECT_NOTES = [
    "Marginal: mean over the level's cells of each cell's mean over seeds; cells: finished / in the matrix"
    " (a marginal over fewer cells is not comparable to the others and is never bold).",
    "Δ: mean difference to the baseline level over matched pairs (same level of every other factor, same seed),"
    " with a {conf:.0%} bootstrap percentile interval ({resamples} resamples, seed {seed}).",
    "p: two-sided Wilcoxon signed-rank test of the pairs (no correction for multiple comparisons).",
    "pairs: finished pairs used / pairs in the matrix.",
]


def effects_table(effects: pl.DataFrame, metric: str, higher: bool, notes: list[str]) -> Table:
    """Every factor's levels: marginal mean and paired difference to the baseline with CI and p."""
    headers = ["factor", "level", f"{metric} marginal", "cells", "Δ vs baseline [CI]", "p", "pairs"]
    dec = decimals(effects["marginal"].to_list())
    rows, bold = [], set()
    for group in effects.partition_by("factor", maintain_order=True):
        complete = group.filter(pl.col("cells") == pl.col("cells_expected"))
        if complete.height == group.height:
            bold.add((len(rows) + _best_row(group["marginal"].to_list(), higher), 2))
        for r in group.iter_rows(named=True):
            delta = "(baseline)" if r["is_baseline"] else _delta_ci(r, dec)
            p = "" if r["is_baseline"] else _p(r["p_wilcoxon"])
            cells = f"{r['cells']}/{r['cells_expected']}"
            rows.append([r["factor"], r["level"], fmt(r["marginal"], dec), cells, delta, p, _pairs(r)])
    return Table("effects", f"Factor effects on {metric}", headers, rows, bold, notes)


def _pairs(r: dict) -> str:
    return f"{r['pairs']}/{r['pairs_expected']}"


def interaction_table(inter: pl.DataFrame, metric: str, notes: list[str]) -> Table:
    """Rows: levels of `by`; columns: the factor's marginal per level, then each level's Δ vs baseline."""
    factor, by = inter["factor"][0], inter["by"][0]
    levels = inter["level"].unique(maintain_order=True).to_list()
    baseline = inter["baseline"][0]
    compared = [lv for lv in levels if lv != baseline]
    headers = [by] + [f"{factor}={lv}" for lv in levels]
    headers += [h for lv in compared for h in (f"Δ {lv} vs {baseline} [CI]", "p", "pairs")]
    dec = decimals(inter["marginal"].to_list())
    rows = []
    for group in inter.partition_by("by_level", maintain_order=True):
        by_level = {r["level"]: r for r in group.iter_rows(named=True)}
        row = [group["by_level"][0]] + [fmt(by_level[lv]["marginal"], dec) for lv in levels]
        for lv in compared:
            r = by_level[lv]
            row += [_delta_ci(r, dec), _p(r["p_wilcoxon"]), _pairs(r)]
        rows.append(row)
    return Table(f"interaction_{factor}__{by}", f"{metric}: {factor} × {by}", headers, rows, set(), notes)


def ranking_table(stats: pl.DataFrame, factors: list[str], metric: str, k: int) -> Table:
    """The top-k cells by the primary metric, with the best seed's job (its checkpoint is in the run directory)."""
    headers = ["rank"] + factors + [f"{metric} (mean ± std)", "n", "best job"]
    dec = decimals(stats[f"{metric} mean"].to_list())
    rows = [
        [str(i + 1), *(str(r[f]) for f in factors), mean_std(r[f"{metric} mean"], r[f"{metric} std"], dec)]
        + [str(r["jobs"]), r["best_job"]]
        for i, r in enumerate(stats.head(k).iter_rows(named=True))
    ]
    return Table("ranking", f"Top {min(k, stats.height)} cells by {metric}", headers, rows)
