"""Report frames -> `Table`s: formatted text cells, which cells are bold, notes; no output format yet."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from expmatrix.metrics import higher_is_better
from expmatrix.report.stats import StatsSettings


@dataclass
class Table:
    name: str  # file stem of its CSV/LaTeX fragment: cells, effects, ranking, interaction_<a>__<b>
    title: str
    headers: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of the best values
    notes: list[str] = field(default_factory=list)
    keys: int = 1  # leading columns that name a row: repeated in each part when a narrow terminal splits the table


def decimals(values: list[float | None]) -> int:
    """4 decimals for metrics below 10 (AUROC, efficiencies, Brier), 2 for larger ones (rejections)."""
    return 2 if any(v is not None and abs(v) >= 10 for v in values) else 4


def fmt(x: float | None, dec: int = 4, sign: bool = False) -> str:
    return "n/a" if x is None else f"{x:{'+' if sign else ''}.{dec}f}"


def mean_std(mean: float | None, std: float | None, dec: int) -> str:
    return fmt(mean, dec) + (f" ± {fmt(std, dec)}" if std is not None and mean is not None else "")


def best_row(values: list[float | None], higher: bool) -> int | None:
    present = [(v, i) for i, v in enumerate(values) if v is not None]
    if not present:
        return None
    return (max if higher else min)(present)[1]


def direction(metric: str, override: dict[str, bool]) -> bool:
    return override.get(metric, higher_is_better(metric))


def health_columns(stats: pl.DataFrame) -> dict[str, str]:
    """Codebook-health column of `stats` -> its header: share of codes used, perplexity, then the resolution
    (reconstruction rmse) of each feature; dead codes are the complement of the share used."""
    rmse = sorted(c for c in stats.columns if c.startswith("codebook.") and c.endswith("_rmse"))
    named = {"codebook.utilisation": "codes used", "codebook.perplexity": "perplexity"}
    return {c: h for c, h in named.items() if c in stats.columns} | {
        c: "rmse " + c.removeprefix("codebook.").removesuffix("_rmse") for c in rmse
    }


def _health(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    if column == "codebook.utilisation":
        return f"{value:.0%}"
    return f"{value:.1f}" if column == "codebook.perplexity" else f"{value:.3g}"


def cells_table(stats: pl.DataFrame, factors: list[str], metrics: list[str], higher: dict[str, bool]) -> Table:
    """One row per cell: levels, mean ± std of each metric, the codebook health of VQ cells, seeds finished,
    params, training time; `converged` and `stalled` where `stats` has them (the latter when a seed stalled)."""
    conv = "converged" in stats.columns  # joined from `convergence`
    stall = "stalled" in stats.columns and (stats["stalled"].fill_null("") != "").any()
    health = {c: h for c, h in health_columns(stats).items() if c not in metrics}  # not twice
    headers = factors + [f"{m} (mean ± std)" if j == 0 else m for j, m in enumerate(metrics)] + list(health.values())
    headers += ["n", "params", "train s"] + ["converged"] * conv + ["stalled seeds"] * stall
    dec = {m: decimals(stats[f"{m} mean"].to_list()) for m in metrics}
    rows = [
        [str(r[f]) for f in factors]
        + [mean_std(r[f"{m} mean"], r[f"{m} std"], dec[m]) for m in metrics]
        + [_health(c, r[c]) for c in health]
        + [str(r["jobs"]), str(r["params"]), f"{r['train_seconds']:.1f}"]
        + ([r["converged"] or "n/a"] if conv else [])
        + ([r["stalled"] or "-"] if stall else [])
        for r in stats.iter_rows(named=True)
    ]
    bold = set()
    for j, m in enumerate(metrics):
        best = best_row(stats[f"{m} mean"].to_list(), direction(m, higher))
        if best is not None:
            bold.add((best, len(factors) + j))
    lower = [m for m in metrics if not direction(m, higher)]
    notes = ["Best value of each metric in bold."] + ([f"Lower is better: {', '.join(lower)}."] if lower else [])
    if stall:
        notes.append(
            "Stalled seeds: final validation value far behind the cell's other seeds (see the warning); the cell's"
            " mean includes them."
        )
    if health:
        notes.append(
            "Codebook health of the VQ tokenizers, on held-out objects (mean over the cell's jobs): the share of"
            " codes used, the perplexity of their use, the reconstruction rmse of each feature in its own units."
        )
    return Table("cells", "Cells: mean ± std over seeds, best first", headers, rows, bold, notes, len(factors))


def with_ci(value: float | None, low: float | None, high: float | None, dec: int, sign: bool = False) -> str:
    """`value [low, high]`, or the value alone when there is no interval."""
    ci = f" [{fmt(low, dec, sign)}, {fmt(high, dec, sign)}]" if low is not None else ""
    return fmt(value, dec, sign) + ci


def _delta_ci(r: dict, dec: int) -> str:
    if r["delta"] is None:
        return "no pairs"
    if r["ci_low"] is None:
        return fmt(r["delta"], dec, True) + (" (too few pairs for an interval)" if r["pairs"] else "")
    return with_ci(r["delta"], r["ci_low"], r["ci_high"], dec, True)


def p_better(r: dict) -> str:
    """`0.83 [0.36, 1.00]`: the share of matched pairs the level won, with its interval."""
    if r["p_better"] is None:
        return "n/a"
    return with_ci(r["p_better"], r["p_better_low"], r["p_better_high"], 2)


def p_value(p: float | None) -> str:
    return "n/a" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


INTERVALS = {
    "t": "a {conf:.0%} Student-t interval (n - 1 degrees of freedom; below {fewest} pairs none is printed)",
    "percentile": "a {conf:.0%} bootstrap percentile interval ({resamples} resamples, seed {seed}); it under-covers"
    " with few pairs (about 80% at 4, 93% at 24), so below {fewest} pairs none is printed",
    "bca": "a {conf:.0%} BCa bootstrap interval ({resamples} resamples, seed {seed}); below {fewest} pairs none is"
    " printed",
}
WILCOXON = "two-sided Wilcoxon signed-rank test of the pairs (the bootstrap intervals' companion)"
TESTS = {"t": "two-sided paired t-test (it agrees with the interval)", "bca": WILCOXON, "percentile": WILCOXON}
CORRECTIONS = {"holm": "Holm (family-wise error)", "bh": "Benjamini-Hochberg (false discovery rate)"}


def effect_notes(s: StatsSettings, correction: str, comparisons: int) -> list[str]:
    """The notes of the effects and interaction tables: what Δ, its interval and p are."""
    test = TESTS[s.interval]
    interval = INTERVALS[s.interval].format(conf=s.confidence, resamples=s.resamples, seed=s.seed, fewest=s.fewest)
    adjusted = (
        f"p adj: {CORRECTIONS[correction]} over the {comparisons} paired comparison{'s' * (comparisons != 1)} of"
        " this report (effects and interactions); intervals are not adjusted."
        if correction != "none"
        else f"p-values are not adjusted for the {comparisons} paired comparison(s) of this report."
    )
    return [
        "Marginal: mean over the level's cells of each cell's mean over seeds; cells: finished / in the matrix"
        " (a marginal over fewer cells is not comparable to the others and is never bold).",
        "Δ: mean difference to the baseline level over matched pairs (same level of every other factor, same seed),"
        f" with {interval}.",
        f"p: {test}. {adjusted}",
        "pairs: finished pairs used / pairs in the matrix.",
        f"P(better): share of the matched pairs in which the level beats the baseline (a tie counts half), with a"
        f" {s.confidence:.0%} Clopper-Pearson interval (at least its stated coverage of the mean chance over the"
        " pairs, for any number of pairs).",
    ]


def _p_cells(r: dict, adjusted: bool) -> list[str]:
    return [p_value(r["p"])] + ([p_value(r["p_adj"])] if adjusted else [])


def effects_table(effects: pl.DataFrame, metric: str, higher: bool, notes: list[str]) -> Table:
    """Every factor's levels: marginal mean and paired difference to the baseline with CI and p."""
    adjusted = "p_adj" in effects.columns
    headers = ["factor", "level", f"{metric} marginal", "cells", "Δ vs baseline [CI]", "p"]
    headers += ["p adj"] * adjusted + ["P(better) [CI]", "pairs"]
    dec = decimals(effects["marginal"].to_list())
    rows, bold = [], set()
    for group in effects.partition_by("factor", maintain_order=True):
        complete = group.filter(pl.col("cells") == pl.col("cells_expected"))
        if complete.height == group.height:
            bold.add((len(rows) + best_row(group["marginal"].to_list(), higher), 2))
        for r in group.iter_rows(named=True):
            delta = "(baseline)" if r["is_baseline"] else _delta_ci(r, dec)
            p = [""] * (2 + adjusted) if r["is_baseline"] else [*_p_cells(r, adjusted), p_better(r)]
            cells = f"{r['cells']}/{r['cells_expected']}"
            rows.append([r["factor"], r["level"], fmt(r["marginal"], dec), cells, delta, *p, _pairs(r)])
    return Table("effects", f"Factor effects on {metric}", headers, rows, bold, notes, keys=2)


def _pairs(r: dict) -> str:
    return f"{r['pairs']}/{r['pairs_expected']}"


def interaction_table(inter: pl.DataFrame, metric: str, notes: list[str]) -> Table:
    """Rows: levels of `by`; columns: the factor's marginal per level, then each level's Δ vs baseline."""
    factor, by = inter["factor"][0], inter["by"][0]
    adjusted = "p_adj" in inter.columns
    levels = inter["level"].unique(maintain_order=True).to_list()
    baseline = inter["baseline"][0]
    compared = [lv for lv in levels if lv != baseline]
    headers = [by] + [f"{factor}={lv}" for lv in levels]
    headers += [
        h for lv in compared for h in (f"Δ {lv} vs {baseline} [CI]", "p", *["p adj"] * adjusted, "P(better)", "pairs")
    ]
    dec = decimals(inter["marginal"].to_list())
    rows = []
    for group in inter.partition_by("by_level", maintain_order=True):
        by_level = {r["level"]: r for r in group.iter_rows(named=True)}
        row = [group["by_level"][0]] + [fmt(by_level[lv]["marginal"], dec) for lv in levels]
        for lv in compared:
            r = by_level[lv]
            row += [_delta_ci(r, dec), *_p_cells(r, adjusted), p_better(r), _pairs(r)]
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
    return Table("ranking", f"Top {min(k, stats.height)} cells by {metric}", headers, rows, keys=1 + len(factors))


def _p_adj(r: dict) -> str:
    """Blank for a term outside the adjusted family (the seed block)."""
    return "" if r["p_adj"] is None and r["term"] == "seed" else p_value(r["p_adj"])


def anova_table(anova: pl.DataFrame, metric: str, notes: list[str]) -> Table:
    """The factorial model's ANOVA: one row per term, then the residual."""
    adjusted = "p_adj" in anova.columns
    headers = ["term", "df", "sum of squares", "F", "p", *["p adj"] * adjusted, "partial η²"]
    rows = [
        [r["term"], str(r["df"]), f"{r['sum_sq']:.3g}"]
        + (
            [""] * (3 + adjusted)
            if r["term"] == "residual"
            else [fmt(r["F"], 2), p_value(r["p"]), *([_p_adj(r)] if adjusted else []), fmt(r["partial_eta2"], 3)]
        )
        for r in anova.iter_rows(named=True)
    ]
    return Table("anova", f"ANOVA of {metric}: every factor at once, seed as a block", headers, rows, set(), notes)


def emm_table(emm: pl.DataFrame, metric: str, notes: list[str]) -> Table:
    """Estimated marginal means of each level and their differences to the baseline, from the model."""
    dec = decimals(emm["emm"].to_list())
    headers = ["factor", "level", f"{metric} EMM [CI]", "Δ vs baseline [CI]", "p"]
    rows = []
    for r in emm.iter_rows(named=True):
        mean = with_ci(r["emm"], r["emm_low"], r["emm_high"], dec)
        if r["level"] == r["baseline"]:
            delta, p = "(baseline)", ""
        else:
            delta, p = with_ci(r["delta"], r["delta_low"], r["delta_high"], dec, True), p_value(r["p"])
        rows.append([r["factor"], r["level"], mean, delta, p])
    return Table("marginal_means", f"Estimated marginal means of {metric} (model)", headers, rows, set(), notes, 2)


def _seeds(n: int | None) -> str:
    return f"> {1000}" if n is None else str(n)


def seeds_table(seeds: pl.DataFrame, metric: str, difference: float, power: float, confidence: float) -> Table:
    """Per compared level: the seed noise of a difference, what the finished seeds resolve, and the seeds
    per cell needed for `difference`."""
    dec = max(4, decimals(seeds["seed_sd"].to_list()))
    headers = [
        "factor",
        "level",
        "pairs (cells × seeds)",
        "seed sd of Δ",
        "resolvable Δ now",
        "in one cell",
        f"seeds/cell for {difference:g}",
        "in one cell",
    ]
    rows = []
    for r in seeds.iter_rows(named=True):
        shape = f"{r['pairs']} ({r['cell_pairs']} × {r['seeds']:.3g})" if r["seeds"] else str(r["pairs"])
        if r["seed_sd"] is None or r["seed_sd"] == 0:
            why = "one seed: no spread" if r["seed_sd"] is None else "no spread"
            rows.append([r["factor"], f"{r['level']} vs {r['baseline']}", shape, why, "n/a", "n/a", "n/a", "n/a"])
            continue
        rows.append(
            [r["factor"], f"{r['level']} vs {r['baseline']}", shape, fmt(r["seed_sd"], dec)]
            + [fmt(r["resolvable"], dec), fmt(r["resolvable_cell"], dec)]
            + [_seeds(r["seeds_for_difference"]), _seeds(r["seeds_for_difference_cell"])]
        )
    notes = [
        f"Two-sided t-test at {1 - confidence:.2g}, power {power:.0%}. Seed sd of Δ: spread of the paired"
        " differences about their cell pair's mean, pooled over cell pairs (spread between cell pairs is an"
        " interaction, not noise).",
        "Resolvable Δ now: the smallest true difference the finished seeds detect with that power, for the marginal"
        " effect (all pairs) and within one cell (its seeds alone); seeds/cell: the seeds every cell needs to resolve"
        f" a difference of {difference:g} (report.difference).",
    ]
    return Table("seeds", f"How many seeds: {metric}", headers, rows, set(), notes, keys=2)
