"""An experiment's runs -> a `Report` (tables, numbers, plots) -> files in every format.

report = build_report(matrix, store, settings, out)
write_report(report, out, results)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm import tqdm

from expmatrix.config import SpecError
from expmatrix.matrix import Matrix
from expmatrix.metrics import higher_is_better
from expmatrix.report import page_data, plots, tables
from expmatrix.report.anova import factorial
from expmatrix.report.collect import collect, orphans, read_history, read_predictions
from expmatrix.report.convergence import convergence, convergence_warning
from expmatrix.report.coverage import coverage
from expmatrix.report.document import Report
from expmatrix.report.effects import cell_stats, factor_effects, finished, interaction, levels_of
from expmatrix.report.formats import FORMATS
from expmatrix.report.formats.latex import render_table
from expmatrix.report.lengths import length_plot, length_tables
from expmatrix.report.seeds import seeds_frame
from expmatrix.report.settings import ReportSettings
from expmatrix.report.stats import StatsSettings, adjust
from expmatrix.report.tables import direction
from expmatrix.report.verdict import verdict
from expmatrix.runfiles import atomic_write
from expmatrix.store import RunStore

FILES = {"markdown": "report.md", "latex": "report.tex", "html": "report.html"}


def _check_metrics(results: pl.DataFrame, metrics: list[str]) -> None:
    unknown = [m for m in metrics if m not in results.columns]
    if unknown:
        known = sorted(
            c for c in results.columns if c.startswith(("test.", "val.")) or c in ("params", "train_seconds")
        )
        raise SpecError(f"report.metrics: no finished job has {', '.join(unknown)}; available: {', '.join(known)}")


def cell_label(row: dict, factors: list[str]) -> str:
    return ", ".join(f"{f.rsplit('.', 1)[-1]}={row[f]}" for f in factors)


def best_models(
    stats: pl.DataFrame, results: pl.DataFrame, factors: list[str], metric: str, store: RunStore
) -> pl.DataFrame:
    """Every cell ranked by `metric`, with the best seed's job, its own value and run directory."""
    own = results.select(pl.col("job").alias("best_job"), pl.col(metric).alias(f"best_job {metric}"))
    return (
        stats.select(*factors, f"{metric} mean", f"{metric} std", f"{metric} n", "best_job", "best_seed")
        .join(own, on="best_job", how="left", maintain_order="left")
        .with_columns(
            pl.col("best_job").map_elements(lambda j: str(store.job(j).dir), return_dtype=pl.String).alias("run_dir")
        )
        .with_row_index("rank", offset=1)
    )


def _jobs_of(results: pl.DataFrame, levels: dict[str, str]) -> list[str]:
    return finished(results).filter(*(pl.col(f) == v for f, v in levels.items()))["job"].to_list()


@dataclass
class Numbers:
    """What the plots draw from."""

    results: pl.DataFrame
    stats: pl.DataFrame
    effects: pl.DataFrame | None  # None: no factor with two levels
    inters: list[pl.DataFrame]
    factors: list[str]
    varied: list[str]  # factors with more than one level


# Per task: the curve drawn from the test predictions (function, file stem prefix), and the learning-curve metric.
CURVES = {"classification": (plots.roc_plot, "roc"), "direction": (plots.angular_error_plot, "angular_error")}
LEARNING = {"classification": ("val_auroc", "val AUROC"), "direction": ("val_angle_median", "val median angle [rad]")}


def make_plots(n: Numbers, s: ReportSettings, store: RunStore, out: Path) -> list[Path]:
    """Effects, heatmaps, ROC (classification) or angular-error distributions (directions) of the top
    cells and of each factor's levels (others at the best cell), learning curves of the top cells."""
    results, stats, effects, inters, factors, varied = n.results, n.stats, n.effects, n.inters, n.factors, n.varied
    curve, prefix = CURVES[s.task]
    top = [dict(zip(factors, r, strict=True)) for r in stats.head(s.top_k).select(factors).iter_rows()]
    best = top[0]
    steps = [lambda: plots.effects_plot(effects, s.metric, out)] if varied else []
    steps += [lambda i=i: plots.heatmap(i, s.metric, out) for i in inters]
    preds = {cell_label(c, factors): [read_predictions(store, j) for j in _jobs_of(results, c)] for c in top}
    steps.append(lambda: curve(preds, f"top {len(top)} cells by {s.metric}", out, f"{prefix}_cells"))
    for f in varied:
        fixed = {g: v for g, v in best.items() if g != f}
        curves = {
            lv: [read_predictions(store, j) for j in _jobs_of(results, {**fixed, f: lv})]
            for lv in levels_of(results, f)
        }
        curves = {k: v for k, v in curves.items() if v}
        title = f"{f} levels; fixed: {cell_label(fixed, list(fixed))}"
        steps.append(lambda c=curves, t=title, f=f: curve(c, t, out, f"{prefix}_{f}"))
    hist = {cell_label(c, factors): [read_history(store, j) for j in _jobs_of(results, c)] for c in top}
    steps.append(lambda: plots.learning_curves(hist, out, *LEARNING[s.task]))
    return [step() for step in tqdm(steps, desc="plots", leave=False)]


def page(n: Numbers, s: ReportSettings, store: RunStore) -> dict[str, Any]:
    """The data of the interactive page."""
    column, label = LEARNING[s.task]
    return {
        "factors": n.factors,
        "levels": {f: [str(v) for v in levels_of(n.results, f)] for f in n.factors},
        "metrics": s.metrics,
        "metric": s.metric,
        "task": s.task,
        "learning_label": label,
        "cells": page_data.cells(n.stats, n.results, n.factors, s.metrics),
        "forest": page_data.forest(n.effects, n.inters),
        "curves": page_data.per_cell(n.results, n.factors, store, s.task, column),
    }


def with_adjusted(frames: list[pl.DataFrame], correction: str) -> list[pl.DataFrame]:
    """The frames with `p_adj`: `correction` over every p-value in them, one family (none: unchanged)."""
    if correction == "none":
        return frames
    adjusted = iter(adjust([p for f in frames for p in f["p"].to_list()], correction))
    return [f.with_columns(pl.Series("p_adj", [next(adjusted) for _ in range(f.height)], pl.Float64)) for f in frames]


def analysis(
    results: pl.DataFrame, varied: list[str], pairs: list[tuple[str, str]], baselines: dict[str, str], s: ReportSettings
) -> tuple[list[tables.Table], dict[str, pl.DataFrame], list[str]]:
    """The model-based sections: ANOVA, estimated marginal means, seeds needed; and what the model could not do
    where no ANOVA table carries it (a note for the effects table)."""
    anova, emm, notes = factorial(finished(results), s.metric, varied, pairs, baselines, s.confidence)
    out, frames = [], {}
    if anova is not None:
        tested = anova.filter(pl.col("term") != "seed")  # the seed block is no question of the experiment
        if s.correction != "none":
            anova = anova.join(with_adjusted([tested], s.correction)[0].select("term", "p_adj"), on="term", how="left")
        model_notes = [
            "Linear model of every finished job's value: seed block + main effects + the two-way interactions shown,"
            " sum-to-zero coded; Type II sums of squares (right for unbalanced matrices too), F against the residual.",
            f"p adj: {tables.CORRECTIONS[s.correction]} over the {tested['p'].is_not_null().sum()} factor terms."
            if s.correction != "none"
            else "p-values not adjusted.",
            *(f"Note: {n}." for n in notes),
        ]
        out += [tables.anova_table(anova, s.metric, model_notes)]
        emm_notes = [
            "EMM: the model's mean of a level over a balanced grid of the other factors and seeds;"
            f" {s.confidence:.0%} Student-t intervals on the residual degrees of freedom."
            " On a balanced matrix Δ equals the effects table's.",
        ]
        out += [tables.emm_table(emm, s.metric, emm_notes)]
        frames |= {"anova": anova, "marginal_means": emm}
    seeds = seeds_frame(results, varied, s.metric, baselines, s.difference, s.confidence, s.power)
    if seeds.height:
        out.append(tables.seeds_table(seeds, s.metric, s.difference, s.power, s.confidence))
        frames["seeds"] = seeds
    return out, frames, notes if anova is None else []  # with an ANOVA table, its notes say them


def compare(
    results: pl.DataFrame, factors: list[str], varied: list[str], s: ReportSettings
) -> tuple[list[tables.Table], dict[str, pl.DataFrame], pl.DataFrame | None, list[pl.DataFrame]]:
    """Effects, interactions and the model-based sections of the varied factors: (tables, frames, effects,
    interactions); nothing when no factor has two levels."""
    if not varied:
        return [], {}, None, []
    settings = StatsSettings(s.confidence, s.bootstrap, s.seed, s.interval, s.min_pairs)
    baselines = {f: s.baseline.get(f) or levels_of(results, f)[0] for f in varied}
    higher = direction(s.metric, s.directions())
    effects = pl.concat([factor_effects(results, factors, s.metric, f, baselines[f], settings, higher) for f in varied])
    pairs = s.interaction_pairs(varied)
    inters = [interaction(results, factors, s.metric, a, baselines[a], b, settings, higher) for a, b in pairs]
    effects, *inters = with_adjusted([effects, *inters], s.correction)
    comparisons = sum(int(f["p"].is_not_null().sum()) for f in [effects, *inters])
    notes = tables.effect_notes(settings, s.correction, comparisons)
    model_tables, model_frames, model_notes = analysis(results, varied, pairs, baselines, s)
    out = [
        tables.effects_table(effects, s.metric, higher, notes + [f"The factorial model: {n}." for n in model_notes]),
        *(tables.interaction_table(i, s.metric, [*notes[1:3], notes[4]]) for i in inters),
        *model_tables,
    ]
    frames = {"effects": effects, **{f"interaction_{a}__{b}": i for (a, b), i in zip(pairs, inters, strict=True)}}
    return out, frames | model_frames, effects, inters


def build_report(
    matrix: Matrix, store: RunStore, s: ReportSettings, out: Path | None, title: str
) -> tuple[Report, pl.DataFrame]:
    """Collect the runs and compute every table; plots go to `out/plots` (none if `out` is None)."""
    results = collect(matrix, store)
    factors = matrix.factor_names or ["cell"]
    varied = [f for f in factors if results[f].n_unique() > 1]  # a factor of one level has no effect to show
    stray = orphans(matrix, store)
    left_out = [f"{len(stray)} run directories belong to no job of this matrix (left out)"] if stray else []
    if finished(results).is_empty():
        return Report(
            title, coverage(results, factors, []) + left_out + ["no finished job: nothing to compare"], []
        ), results
    _check_metrics(results, s.metrics)
    s.check_levels({f: levels_of(results, f) for f in factors})
    higher = s.directions()
    stats = cell_stats(results, factors, s.metrics, s.metric, direction(s.metric, higher))
    column = LEARNING[s.task][0]
    conv = convergence(results, factors, store, column, higher_is_better(column), s.plateau_epochs)
    stats = stats.join(conv.select(*factors, "converged", "stalled"), on=factors, how="left", maintain_order="left")
    compared, compared_frames, effects, inters = compare(results, factors, varied, s)
    table_list = [
        tables.cells_table(stats, factors, s.metrics, higher),
        *compared,
        tables.ranking_table(stats, factors, s.metric, s.top_k),
        *length_tables(results, factors, s.baseline, s.confidence),
    ]
    frames = {
        "summary": stats.with_columns(pl.col("seeds").list.eval(pl.element().cast(pl.String)).list.join(" ")),
        "best_models": best_models(stats, results, factors, s.metric, store),
        **compared_frames,
        "convergence": conv,
    }
    warnings = coverage(results, factors, s.metrics) + left_out
    warnings += convergence_warning(conv, factors, column, s.plateau_epochs)
    up = direction(s.metric, higher)
    said = verdict(effects, inters, compared_frames.get("anova"), s.metric, up, s.confidence)
    report = Report(title, warnings, table_list, frames, verdict=said)
    if out is not None:
        numbers = Numbers(results, stats, effects, inters, factors, varied)
        report.plots = make_plots(numbers, s, store, out / "plots")
        report.plots += [p for p in [length_plot(results, factors, out / "plots")] if p is not None]
        report.page = page(numbers, s, store)
    return report, results


def write_report(report: Report, results: pl.DataFrame, out: Path) -> list[Path]:
    """report.md|tex|html, results.parquet, summary.csv, best_models.csv, tables/*.csv|tex; returns the paths."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, name in FILES.items():
        atomic_write(out / name, FORMATS[fmt](report))
        written.append(out / name)
    results.write_parquet(out / "results.parquet")
    written.append(out / "results.parquet")
    for name, frame in report.frames.items():
        path = out / (f"{name}.csv" if name in ("summary", "best_models") else f"tables/{name}.csv")
        frame.write_csv(path)
        written.append(path)
    for t in report.tables:
        atomic_write(out / "tables" / f"{t.name}.tex", render_table(t))
    return written
