"""What the interactive page shows, as plain data (lists and numbers, JSON-able): the cells with their seed
points, the forest of effects and interaction Δs, and per cell the curves of its seeds: ROC (background
rejection against signal efficiency) or the angular-error distribution, learning curves, codebook health."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from expmatrix.report.collect import read_codebook_health, read_history, read_predictions
from expmatrix.report.effects import finished
from expmatrix.report.plots import ANGLE_GRID, EFF_GRID, rejection_curve
from expmatrix.runfiles import DamagedFile
from expmatrix.store import RunStore

SEP = " | "  # between a cell's levels in its key
CHECKS = ("converged", "stalled")  # the convergence check's columns (convergence.py), text


def cell_key(row: dict, factors: list[str]) -> str:
    return SEP.join(str(row[f]) for f in factors)


def _clean(values: Any) -> list[float | None]:
    """Floats for JSON: NaN and infinities become None (a gap in a line)."""
    return [None if v is None or not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def cells(stats: pl.DataFrame, results: pl.DataFrame, factors: list[str], metrics: list[str]) -> dict[str, list]:
    """One entry per cell (the table's columns): levels, each metric's mean and std, its seeds' values, and
    `converged` and `stalled` (the convergence check's) where `stats` has them."""
    values = finished(results).group_by(factors).agg(pl.col(metrics[0]), pl.col("seed"))
    seeds = {cell_key(r, factors): r for r in values.iter_rows(named=True)}
    checks = [c for c in CHECKS if c in stats.columns]
    out: dict[str, list] = {"key": [], **{f: [] for f in factors}, "n": [], "seed_values": [], "seeds": []}
    out |= {c: [] for c in checks}
    for m in metrics:
        out[f"{m} mean"], out[f"{m} std"] = [], []
    for r in stats.iter_rows(named=True):
        key = cell_key(r, factors)
        out["key"].append(key)
        for f in factors:
            out[f].append(str(r[f]))
        for m in metrics:
            out[f"{m} mean"].append(_clean([r[f"{m} mean"]])[0])
            out[f"{m} std"].append(_clean([r[f"{m} std"]])[0])
        out["n"].append(r["jobs"])
        points = seeds[key]
        out["seed_values"].append(_clean(points[metrics[0]]))
        out["seeds"].append(" ".join(f"{v:.4f}" for v in points[metrics[0]] if v is not None))
        for c in checks:
            out[c].append(r[c] or "")
    return out


def forest(effects: pl.DataFrame | None, inters: list[pl.DataFrame]) -> dict[str, list]:
    """Every compared level's Δ with its interval: the factor effects, then each interaction's rows."""
    out: dict[str, list] = {"label": [], "delta": [], "low": [], "high": [], "group": []}

    def add(label: str, r: dict, group: str) -> None:
        if r["is_baseline"] or r["delta"] is None:
            return
        out["label"].append(label)
        out["delta"].append(r["delta"])
        low, high = (r["ci_low"], r["ci_high"]) if r["ci_low"] is not None else (r["delta"], r["delta"])
        out["low"].append(low)
        out["high"].append(high)
        out["group"].append(group)

    for r in effects.iter_rows(named=True) if effects is not None else []:
        add(f"{r['factor']}: {r['level']} vs {r['baseline']}", r, "effect")
    for inter in inters:
        for r in inter.iter_rows(named=True):
            add(f"{r['factor']}: {r['level']} vs {r['baseline']} at {r['by']}={r['by_level']}", r, "interaction")
    return out


def _curve(store: RunStore, job: str, task: str) -> tuple[list[float], list[float | None]]:
    preds = read_predictions(store, job)
    if task == "classification":
        return EFF_GRID.tolist(), _clean(rejection_curve(preds))
    errors = np.sort(preds["angular_error"].to_numpy())
    return ANGLE_GRID.tolist(), _clean(np.searchsorted(errors, ANGLE_GRID, side="right") / len(errors))


def _learning(store: RunStore, job: str, column: str) -> tuple[list[float], list[float | None]]:
    hist = read_history(store, job)
    if column not in hist.columns:
        return [], []
    return hist["epoch"].cast(pl.Float64).to_list(), _clean(hist[column].to_list())


def per_cell(results: pl.DataFrame, factors: list[str], store: RunStore, task: str, column: str) -> dict[str, dict]:
    """Cell key -> its seeds' curves: {seed, curve_x, curve_y, epoch, learning, health_epoch, utilisation,
    perplexity} (lists per seed); a job whose files are missing or damaged is left out of the lists."""
    out: dict[str, dict] = {}
    for r in finished(results).sort("seed").iter_rows(named=True):
        c = out.setdefault(cell_key(r, factors), {k: [] for k in ("seed", "curve_x", "curve_y", "epoch", "learning")})
        try:
            x, y = _curve(store, r["job"], task)
            epochs, learning = _learning(store, r["job"], column)
            health = read_codebook_health(store, r["job"])
        except DamagedFile:
            continue
        c["seed"].append(str(r["seed"]))
        c["curve_x"].append(x)
        c["curve_y"].append(y)
        c["epoch"].append(epochs)
        c["learning"].append(learning)
        if health:
            for k in ("health_epoch", "utilisation", "perplexity"):
                c.setdefault(k, [])
            c["health_epoch"].append([float(h["epoch"]) for h in health])
            c["utilisation"].append(_clean([h["utilisation"] for h in health]))
            c["perplexity"].append(_clean([h["perplexity"] for h in health]))
    return out
