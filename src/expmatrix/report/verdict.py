"""The verdict: the experiment's question answered in words and numbers, one sentence per factor, then the
interactions the ANOVA resolves.

A level is called better or worse than its baseline only when its paired comparison is resolved (adjusted p
below 1 - confidence, or p where nothing is adjusted); otherwise the sentence says it is not resolved.
"""

from __future__ import annotations

import polars as pl

from expmatrix.report.tables import fmt, with_ci
from expmatrix.report.tables import p_value as p_text


def _p(r: dict) -> float | None:
    return r["p_adj"] if "p_adj" in r else r["p"]


def _p_label(r: dict) -> str:
    return ("p adj " if "p_adj" in r else "p ") + p_text(_p(r)).replace("< ", "<")


def _level(r: dict, dec: int) -> str:
    """`vqvae512 -0.0630 [-0.0720, -0.0540] p adj <0.001`."""
    if r["delta"] is None:
        return f"{r['level']} no finished pairs"
    delta = with_ci(r["delta"], r["ci_low"], r["ci_high"], dec, True)
    return f"{r['level']} {delta} {_p_label(r)}"


def factor_sentence(group: pl.DataFrame, metric: str, higher: bool, alpha: float) -> str:
    """`tokenizer: direct best (0.8121); vs direct: vqvae512 -0.0630 [...] p adj <0.001; ...`"""
    rows = group.rows(named=True)
    dec = 2 if any(r["marginal"] is not None and abs(r["marginal"]) >= 10 for r in rows) else 4
    factor, baseline = rows[0]["factor"], rows[0]["baseline"]
    ranked = sorted((r for r in rows if r["marginal"] is not None), key=lambda r: r["marginal"], reverse=higher)
    if not ranked:
        return f"{factor}: no finished cell"
    best = ranked[0]
    others = [r for r in rows if not r["is_baseline"]]
    resolved = [r for r in others if _p(r) is not None and _p(r) < alpha]
    head = f"{factor}: {best['level']} best ({metric} {fmt(best['marginal'], dec)})"
    clauses = "; ".join(_level(r, dec) for r in others)
    if not resolved:
        tail = f" - no level resolved from {baseline}"
    elif best["is_baseline"] and len(resolved) == len(others):
        tail = f" - every other level resolved below {baseline}" if higher else f" - {baseline} resolved best"
    else:
        tail = ""
    return f"{head}; vs {baseline}: {clauses}{tail}"


def interaction_sentence(term: str, p: str, inters: list[pl.DataFrame]) -> str:
    """`tokenizer × vect (p adj <0.001): Δ binned_ambre5 vs direct -0.19 at vect=4, -0.24 at vect=5`: the level
    whose Δ changes most across the other factor."""
    a, b = term.split(" × ")
    frame = next((i for i in inters if {i["factor"][0], i["by"][0]} == {a, b}), None)
    if frame is None:
        return f"{term} ({p})"
    factor, by = frame["factor"][0], frame["by"][0]
    compared = frame.filter(~pl.col("is_baseline") & pl.col("delta").is_not_null())
    if compared.is_empty():
        return f"{term} ({p})"
    spread = compared.group_by("level", maintain_order=True).agg(pl.col("delta").max() - pl.col("delta").min())
    level = spread.sort("delta", descending=True, maintain_order=True)["level"][0]
    rows = compared.filter(pl.col("level") == level).rows(named=True)
    dec = 2 if any(abs(r["delta"]) >= 10 for r in rows) else 4
    at = ", ".join(f"{fmt(r['delta'], dec, True)} at {by}={r['by_level']}" for r in rows)
    return f"{term} ({p}): Δ {level} vs {rows[0]['baseline']} of {factor} is {at}"


def verdict(
    effects: pl.DataFrame | None,
    inters: list[pl.DataFrame],
    anova: pl.DataFrame | None,
    metric: str,
    higher: bool,
    confidence: float,
) -> list[str]:
    """The sentences of the verdict (none when no factor has two levels)."""
    if effects is None:
        return []
    alpha = 1 - confidence
    sentences = [
        f"{metric}, {'higher' if higher else 'lower'} is better; Δ vs the baseline level over matched pairs,"
        f" {confidence:.0%} interval, p adjusted over the report's comparisons where the report adjusts."
    ]
    sentences += [
        factor_sentence(g, metric, higher, alpha) for g in effects.partition_by("factor", maintain_order=True)
    ]
    if anova is None:
        return sentences
    terms = anova.filter(pl.col("term").str.contains(" × ")).rows(named=True)
    found = [r for r in terms if _p(r) is not None and _p(r) < alpha]
    if found:
        sentences += [f"Interaction: {interaction_sentence(r['term'], _p_label(r), inters)}" for r in found]
    elif terms:
        sentences.append(f"No interaction resolved by the ANOVA ({len(terms)} pairs of factors tested).")
    return sentences
