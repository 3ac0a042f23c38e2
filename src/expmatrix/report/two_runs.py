"""Two runs side by side (`expmatrix compare A B`): per common cell and per factor level, the Δ of B against A.

A run is every job of an experiment (a profile of it, or a run directory), one row per job as `collect` gives.
Cells are matched by their factor levels. Within a cell, jobs of the same seed are paired and Δ is their mean
difference with the report's interval (Student t by default); a cell with fewer than two common seeds is
compared unpaired instead (Welch's interval of the difference of the two means). A factor level pools the
paired differences of its common cells. Cells and seeds present in only one run are listed, never averaged in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from expmatrix.config import ReportConfig, SpecError
from expmatrix.matrix import Matrix, build_matrix
from expmatrix.metrics import higher_is_better
from expmatrix.report.build import write_report
from expmatrix.report.collect import collect, collect_dir
from expmatrix.report.document import Report
from expmatrix.report.effects import finished
from expmatrix.report.formats import FORMATS
from expmatrix.report.formats.text import WIDTH, render_terminal
from expmatrix.report.stats import StatsSettings, paired_stats, prob_better, wins_of
from expmatrix.report.tables import Table, decimals, fmt, p_better, p_value, with_ci
from expmatrix.store import RunStore


@dataclass(frozen=True)
class Run:
    name: str  # how tables name it: the experiment (and profile) or the run directory
    results: pl.DataFrame  # one row per job: its levels, seed, state and metrics
    factors: list[str]
    metric: str | None = None  # the experiment's `report.metric` (None: a run directory)


def run_of(matrix: Matrix, runs_root: str | Path, name: str | None = None) -> Run:
    """The jobs of `matrix` under `runs_root`, as a `Run`."""
    results = collect(matrix, RunStore.for_spec(runs_root, matrix.spec))
    return Run(name or matrix.spec.name, results, matrix.factor_names, matrix.spec.report.metric)


def load_run(what: str, runs_root: str | Path) -> Run:
    """`EXPERIMENT.yaml`, `EXPERIMENT.yaml@PROFILE` (its runs under `runs_root`), or a run directory
    (`runs/<experiment>`: every job recorded in it)."""
    path = Path(what)
    if path.is_dir():
        results, factors = collect_dir(RunStore(path.parent, path.name))
        return Run(str(path), results, factors)
    file, _, profile = what.partition("@")
    if not Path(file).is_file():
        raise SpecError(f"{what}: neither a run directory nor an experiment file (EXPERIMENT.yaml[@PROFILE])")
    matrix = build_matrix(file, profile or None)
    return run_of(matrix, runs_root, matrix.spec.name + (f"@{profile}" if profile else ""))


def check_comparable(a: Run, b: Run, metric: str) -> None:
    """The same factors, and the metric in the finished jobs of both; else a `SpecError` that names the run."""
    if set(a.factors) != set(b.factors):
        only = [f"{r.name}: {', '.join(sorted(set(r.factors) - set(o.factors)))}" for r, o in ((a, b), (b, a))]
        raise SpecError(f"the runs have different factors ({'; '.join(x for x in only if not x.endswith(': '))})")
    for r in (a, b):
        done = finished(r.results)
        if done.is_empty():
            raise SpecError(f"{r.name}: no finished job to compare")
        if metric not in done.columns or done[metric].is_null().all():
            known = sorted(c for c in done.columns if c.startswith(("test.", "val.")))
            raise SpecError(f"{r.name}: no finished job has {metric}; it has: {', '.join(known)}")


def welch(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float | None, float | None, float | None]:
    """(low, high, p) of mean(b) - mean(a) from Welch's t; None without two values and some spread per side."""
    if len(a) < 2 or len(b) < 2 or np.ptp(np.r_[a, b]) == 0:
        return None, None, None
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(confidence)
    return float(ci.low), float(ci.high), float(res.pvalue)


def _values(r: Run, metric: str) -> pl.DataFrame:
    return finished(r.results).filter(pl.col(metric).is_not_null()).select(*r.factors, "seed", pl.col(metric))


def cell_deltas(a: Run, b: Run, metric: str, s: StatsSettings, higher: bool) -> tuple[pl.DataFrame, list[str]]:
    """(one row per cell finished in both runs, what was left out: cells and seeds of one run only)."""
    factors = a.factors
    va, vb = _values(a, metric), _values(b, metric)
    by_cell = [pl.col("seed").alias("seeds"), pl.col(metric).alias("v")]  # seeds and values in one order
    cells_a = va.sort("seed").group_by(factors, maintain_order=True).agg(by_cell)
    cells_b = vb.sort("seed").group_by(factors, maintain_order=True).agg(by_cell)
    both = cells_a.join(cells_b, on=factors, suffix="_b").sort(factors)
    notes = []
    for r, mine, other in ((a, cells_a, cells_b), (b, cells_b, cells_a)):
        for row in mine.join(other, on=factors, how="anti").sort(factors).iter_rows(named=True):
            notes.append(f"cell only in {r.name}: {', '.join(f'{f}={row[f]}' for f in factors)}")
    rows = []
    for cell in both.iter_rows(named=True):
        seeds_a, seeds_b = (
            dict(zip(cell["seeds"], cell["v"], strict=True)),
            dict(zip(cell["seeds_b"], cell["v_b"], strict=True)),
        )
        common = sorted(set(seeds_a) & set(seeds_b))
        levels = {f: cell[f] for f in factors}
        unmatched = sorted(set(seeds_a) ^ set(seeds_b))
        if unmatched and len(common) >= 2:
            named = ", ".join(f"{f}={v}" for f, v in levels.items())
            seeds = ", ".join(map(str, unmatched))
            notes.append(f"cell {named}: seeds {seeds} in one run only (left out of its pairs)")
        row = levels | {"a_mean": float(np.mean(cell["v"])), "a_n": len(seeds_a)}
        row |= {"b_mean": float(np.mean(cell["v_b"])), "b_n": len(seeds_b), "pairs": len(common)}
        if len(common) >= 2:
            d = np.array([seeds_b[k] - seeds_a[k] for k in common])
            ps = paired_stats(d, s)
            better = prob_better(wins_of(d, higher), s.confidence)
            row |= {"paired": True, "delta": ps.mean, "ci_low": ps.ci_low, "ci_high": ps.ci_high, "p": ps.p}
            row |= dict(zip(("p_better", "p_better_low", "p_better_high"), map(float, better), strict=True))
        else:  # seeds do not match (or one in common): the two means, unpaired
            va_, vb_ = np.array(cell["v"]), np.array(cell["v_b"])
            low, high, p = welch(va_, vb_, s.confidence)
            row |= {"paired": False, "delta": float(vb_.mean() - va_.mean()), "ci_low": low, "ci_high": high, "p": p}
            row |= dict.fromkeys(("p_better", "p_better_low", "p_better_high"))
        rows.append(row)
    floats = ("a_mean", "b_mean", "delta", "ci_low", "ci_high", "p", "p_better", "p_better_low", "p_better_high")
    frame = pl.DataFrame(rows, schema_overrides=dict.fromkeys(floats, pl.Float64), infer_schema_length=None)
    return frame, notes


def level_deltas(a: Run, b: Run, metric: str, s: StatsSettings, higher: bool) -> pl.DataFrame:
    """Per factor level (and `all`): the paired differences of its common cells' common seeds, pooled."""
    keys = [*a.factors, "seed"]
    pairs = _values(a, metric).join(_values(b, metric), on=keys, suffix="_b")
    pairs = pairs.with_columns((pl.col(f"{metric}_b") - pl.col(metric)).alias("d"))
    groups = [("all", "all", pairs)] + [
        (f, str(lv), pairs.filter(pl.col(f) == lv)) for f in a.factors for lv in pairs[f].unique(maintain_order=True)
    ]
    rows = []
    for factor, level, g in groups:
        d = g["d"].to_numpy()
        ps = paired_stats(d, s)
        better = tuple(map(float, prob_better(wins_of(d, higher), s.confidence))) if len(d) else (None,) * 3
        cells = g.select(a.factors).unique().height
        row = {"factor": factor, "level": level, "cells": cells, "pairs": ps.n, "a_mean": g[metric].mean()}
        row |= {"b_mean": g[f"{metric}_b"].mean(), "delta": ps.mean, "ci_low": ps.ci_low, "ci_high": ps.ci_high}
        row |= {"p": ps.p} | dict(zip(("p_better", "p_better_low", "p_better_high"), better, strict=True))
        rows.append(row)
    floats = ("a_mean", "b_mean", "delta", "ci_low", "ci_high", "p", "p_better", "p_better_low", "p_better_high")
    return pl.DataFrame(rows, schema_overrides=dict.fromkeys(floats, pl.Float64), infer_schema_length=None)


def _delta(r: dict, dec: int) -> str:
    if r["delta"] is None:
        return "no pairs"
    return (
        with_ci(r["delta"], r["ci_low"], r["ci_high"], dec, True)
        if r["ci_low"] is not None
        else fmt(r["delta"], dec, True)
    )


def compare_runs(a: Run, b: Run, metric: str, s: StatsSettings, higher: bool) -> Report:
    """The report of B against A: the verdict (every common cell pooled), Δ per factor level, Δ per cell."""
    check_comparable(a, b, metric)
    cells, left_out = cell_deltas(a, b, metric, s, higher)
    if cells.is_empty():
        raise SpecError(f"{a.name} and {b.name} have no finished cell in common")
    levels = level_deltas(a, b, metric, s, higher)
    dec = decimals(cells["a_mean"].to_list() + cells["b_mean"].to_list())
    ab = "A mean", "B mean"
    level_rows = [
        [r["factor"], r["level"], str(r["cells"]), fmt(r["a_mean"], dec), fmt(r["b_mean"], dec), _delta(r, dec)]
        + [p_value(r["p"]), p_better(r), str(r["pairs"])]
        for r in levels.iter_rows(named=True)
    ]
    notes = [
        f"A: {a.name}; B: {b.name}. Δ = B - A over the pairs (same cell, same seed), {s.confidence:.0%} Student-t"
        " interval; p: paired t-test, not adjusted. By level: means over the pairs.",
        "P(better): share of the pairs in which B beats A (a tie counts half), Clopper-Pearson interval.",
    ]
    headers = ["factor", "level", "cells", *ab, "Δ B - A [CI]", "p", "P(B better) [CI]", "pairs"]
    level_table = Table(
        "compare_levels", f"B against A by factor level: {metric}", headers, level_rows, set(), notes, 2
    )
    cell_rows = [
        [str(r[f]) for f in a.factors]
        + [f"{fmt(r['a_mean'], dec)} ({r['a_n']})", f"{fmt(r['b_mean'], dec)} ({r['b_n']})", _delta(r, dec)]
        + [p_value(r["p"]), p_better(r), f"{r['pairs']} paired" if r["paired"] else "unpaired"]
        for r in cells.iter_rows(named=True)
    ]
    cell_notes = notes[:1] + [
        "A cell with fewer than two seeds in common is compared unpaired: Welch's interval of B's mean - A's mean.",
        "Means with their number of seeds in brackets.",
    ]
    headers = [*a.factors, f"{ab[0]} (n)", f"{ab[1]} (n)", "Δ B - A [CI]", "p", "P(B better) [CI]", "seeds"]
    cell_table = Table(
        "compare_cells", f"B against A per cell: {metric}", headers, cell_rows, set(), cell_notes, len(a.factors)
    )
    overall = levels.row(0, named=True)
    said = [
        f"{metric}, {'higher' if higher else 'lower'} is better. B ({b.name}) against A ({a.name}) over"
        f" {overall['cells']} common cells, {overall['pairs']} seed pairs: Δ {_delta(overall, dec)},"
        f" p {p_value(overall['p'])}, P(B better) {p_better(overall)}."
    ]
    frames = {"compare_levels": levels, "compare_cells": cells}
    return Report(f"{b.name} against {a.name}", left_out, [level_table, cell_table], frames, verdict=said)


def compare_and_write(
    a: Run, b: Run, metric: str | None, out: str | Path | None, fmt: str = "terminal", wide: bool = False
) -> str:
    """`compare_runs` at the report's default settings, its files written to `out` (None: none); the text
    in `fmt`."""
    metric = metric or a.metric or ReportConfig().metric
    s = ReportConfig()
    settings = StatsSettings(s.confidence, s.bootstrap, s.seed, s.interval, s.min_pairs)
    report = compare_runs(a, b, metric, settings, higher_is_better(metric))
    if out is not None:
        both = pl.concat(
            [a.results.with_columns(run=pl.lit("A")), b.results.with_columns(run=pl.lit("B"))], how="diagonal_relaxed"
        )
        write_report(report, both, Path(out))
    return render_terminal(report, None if wide else WIDTH) if fmt == "terminal" else FORMATS[fmt](report)


def against_untuned(untuned_matrix: Matrix, tuned: Matrix, runs_root: str | Path, out: Path) -> str:
    """The tuned matrix (B) against the same matrix untuned (A: `expmatrix run` of the experiment and profile),
    written to `out`; the terminal text, or a line saying there is no untuned run to compare with."""
    untuned = run_of(untuned_matrix, runs_root)
    if finished(untuned.results).is_empty():
        return f"tuned against untuned: no finished untuned job of {untuned.name} under {runs_root} (run it first)"
    tuned_run = run_of(tuned, runs_root)
    return "\nTuned against untuned\n" + compare_and_write(untuned, tuned_run, None, out)
