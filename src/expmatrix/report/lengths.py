"""Angular error by event length (pulse sources): where each cell wins.

A direction job writes `angular_error_mean_<bin>` and `events_<bin>` per bin of pulses per event (in the file,
before any selection; see `training/directions.py`). Two tables: every cell's mean over seeds per bin with a
Student-t interval over the seeds (printed from 2 seeds on), and the paired difference (same seed) of every
level of the compared factor to its baseline level, per bin; and one plot of the means.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from expmatrix.report.plots import save
from expmatrix.report.stats import t_interval
from expmatrix.report.tables import Table, fmt

METRIC = "test.angular_error_mean_"
BIN = re.compile(r"len_(\d+)_(\d+|up)$")


def length_bins(results: pl.DataFrame) -> list[str]:
    """The length bins the finished jobs have, shortest first (`len_1_64`, ...)."""
    names = {c.removeprefix(METRIC) for c in results.columns if c.startswith(METRIC) and BIN.search(c)}
    return sorted(names, key=lambda b: int(BIN.search(b).group(1)))


def bin_label(name: str) -> str:
    low, high = BIN.search(name).groups()
    return f"> {int(low) - 1}" if high == "up" else f"{low}-{high}"


def _mean_ci(values: np.ndarray, confidence: float) -> str:
    values = values[np.isfinite(values)]
    if not len(values):
        return "n/a"
    if len(values) < 2:
        return fmt(float(values.mean()), 3)
    low, high = t_interval(values, confidence)
    return f"{values.mean():.3f} [{low:.3f}, {high:.3f}]"


def _done(results: pl.DataFrame) -> pl.DataFrame:
    return results.filter(pl.col("state") == "done")


def length_tables(
    results: pl.DataFrame, factors: list[str], baseline: dict[str, str], confidence: float
) -> list[Table]:
    """The cells by length bin, and each compared level minus its baseline by bin (paired by seed)."""
    bins, done = length_bins(results), _done(results)
    if not bins or done.is_empty():
        return []
    headers = [*factors, "seeds", *(f"{bin_label(b)} pulses" for b in bins)]
    rows = []
    for key, cell in done.group_by(factors, maintain_order=True):
        counts = [int(cell[f"test.events_{b}"].max() or 0) for b in bins]
        rows.append([*map(str, key), str(cell.height),
                     *(f"{_mean_ci(cell[METRIC + b].cast(pl.Float64).fill_null(np.nan).to_numpy(), confidence)} "
                       f"(n={n})" for b, n in zip(bins, counts, strict=True))])  # fmt: skip
    notes = [
        f"Mean angular error [rad] of the test events in each bin of pulses per event (as stored, before any "
        f"selection); [{confidence:.0%} Student-t interval over the seeds] from 2 seeds on; n: test events."
    ]
    out = [Table("length_bins", "Angular error by event length", headers, rows, notes=notes)]
    for factor, base in baseline.items():
        if factor in factors and done[factor].n_unique() > 1:
            out.append(_difference_table(done, factors, factor, base, bins, confidence))
    return out


def _difference_table(done, factors, factor, base, bins, confidence) -> Table:
    others = [f for f in factors if f != factor]
    ref = done.filter(pl.col(factor) == base).select(*others, "seed", *(pl.col(METRIC + b).alias(b) for b in bins))
    rows = []
    for level in [lv for lv in done[factor].unique(maintain_order=True).to_list() if lv != base]:
        arm = done.filter(pl.col(factor) == level)
        paired = arm.join(ref, on=[*others, "seed"], how="inner", suffix="_base")
        for key, group in paired.group_by(others or ["seed"], maintain_order=True) if others else [((), paired)]:
            diffs = [(group[METRIC + b] - group[b]).cast(pl.Float64).fill_null(np.nan).to_numpy() for b in bins]
            rows.append([level, *map(str, key), str(group.height), *(_mean_ci(d, confidence) for d in diffs)])
    headers = [factor, *others, "pairs", *(f"{bin_label(b)} pulses" for b in bins)]
    notes = [f"Paired by seed: {factor} level minus {base} (negative: smaller error than {base}); "
             f"[{confidence:.0%} Student-t interval of the mean difference] from 2 pairs on."]  # fmt: skip
    return Table(f"length_bins_vs_{base}", f"Angular error by event length: {factor} vs {base}", headers, rows,
                 notes=notes)  # fmt: skip


def length_plot(results: pl.DataFrame, factors: list[str], out: Path) -> Path | None:
    """Mean angular error per length bin, one line per cell (error bars: min-max over seeds)."""
    bins, done = length_bins(results), _done(results)
    if not bins or done.is_empty():
        return None
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(bins))
    for key, cell in done.group_by(factors, maintain_order=True):
        values = np.stack([cell[METRIC + b].cast(pl.Float64).fill_null(np.nan).to_numpy() for b in bins])
        mean = np.nanmean(values, axis=1)
        spread = np.stack([mean - np.nanmin(values, axis=1), np.nanmax(values, axis=1) - mean])
        ax.errorbar(x, mean, yerr=spread, marker="o", capsize=3, label=", ".join(map(str, key)))
    ax.set_xticks(x, [bin_label(b) for b in bins])
    ax.set_xlabel("pulses per event")
    ax.set_ylabel("mean angular error [rad]")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: cells cross each other
    return save(fig, out, "angular_error_by_length")
