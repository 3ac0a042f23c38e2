"""Results frame -> the per-cell comparison table, rendered with tabulate."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from tabulate import tabulate

FORMATS = {"terminal": "simple", "markdown": "github"}


@dataclass
class CellTable:
    metric: str
    headers: list[str]
    rows: list[list[object]]
    warnings: list[str]


def cell_table(
    results: pl.DataFrame, factors: list[str], metric: str, seeds: int, higher_is_better: bool = True
) -> CellTable:
    """One row per cell: factor levels, mean +- std of `metric` over seeds, n, params, time.

    Cells without finished jobs and cells short of seeds are named in `warnings`,
    never silently averaged over.
    """
    warnings = []
    failed = results.filter(pl.col("state") == "failed")
    for r in failed.iter_rows(named=True):
        levels = ", ".join(f"{f}={r[f]}" for f in factors)
        warnings.append(f"failed job {r['job']} ({levels}, seed {r['seed']}): {r.get('error')}")
    done = results.filter(pl.col("state") == "done")
    if done.is_empty() or metric not in done.columns:
        cells = results.select(factors).unique().height
        warnings.append(f"no finished job has {metric!r}: all {cells} cells missing")
        return CellTable(metric, factors, [], warnings)
    keys = factors or ["cell"]
    grouped = (
        done.group_by(keys, maintain_order=True)
        .agg(
            pl.col(metric).mean().alias("mean"),
            pl.col(metric).std().alias("std"),
            pl.len().alias("n"),
            pl.col("params").mean().round(0).cast(pl.Int64).alias("params"),
            pl.col("train_seconds").mean().alias("seconds"),
        )
        .sort("mean", descending=higher_is_better)
    )
    all_cells = results.select(keys).unique(maintain_order=True)
    missing = all_cells.join(grouped.select(keys), on=keys, how="anti")
    for r in missing.iter_rows(named=True):
        warnings.append("missing cell (no finished job): " + ", ".join(f"{k}={r[k]}" for k in keys))
    for r in grouped.filter(pl.col("n") < seeds).iter_rows(named=True):
        warnings.append(f"cell {', '.join(f'{k}={r[k]}' for k in keys)}: {r['n']} of {seeds} seeds finished")
    rows = []
    for r in grouped.iter_rows(named=True):
        spread = f" ± {r['std']:.4f}" if r["std"] is not None else ""
        rows.append([r[k] for k in keys] + [f"{r['mean']:.4f}{spread}", r["n"], r["params"], f"{r['seconds']:.1f}"])
    headers = keys + [f"{metric} (mean ± std)", "n", "params", "train s"]
    return CellTable(metric, headers, rows, warnings)


def render(table: CellTable, fmt: str = "terminal") -> str:
    lines = [f"warning: {w}" for w in table.warnings]
    if table.rows:
        lines.append(tabulate(table.rows, headers=table.headers, tablefmt=FORMATS[fmt], disable_numparse=True))
    if fmt == "markdown":
        lines = [f"> {line}" if line.startswith("warning") else line for line in lines]
    return "\n\n".join(lines) if fmt == "markdown" else "\n".join(lines)


def paired_effect(results: pl.DataFrame, factors: list[str], metric: str, factor: str, baseline: str) -> CellTable:
    """Each level of `factor` against its `baseline` level, paired on every other factor and the seed.

    Rows: level, marginal mean of `metric`, mean paired difference to the baseline ± its std, pairs used.
    """
    done = results.filter(pl.col("state") == "done")
    headers = [factor, f"{metric} mean", f"Δ vs {baseline} (mean ± std)", "pairs"]
    if done.is_empty() or metric not in done.columns:
        return CellTable(metric, headers, [], [])
    keys = [f for f in factors if f != factor] + ["seed"]
    base = done.filter(pl.col(factor) == baseline).select(*keys, pl.col(metric).alias("_base"))
    rows = []
    for level in done[factor].unique(maintain_order=True).to_list():
        part = done.filter(pl.col(factor) == level)
        pairs = part.join(base, on=keys, how="inner").select((pl.col(metric) - pl.col("_base")).alias("d"))["d"]
        mean = part[metric].mean()
        if level == baseline:
            rows.append([level, f"{mean:.4f}", "(baseline)", len(pairs)])
            continue
        spread = f" ± {pairs.std():.4f}" if len(pairs) > 1 else ""
        delta = f"{pairs.mean():+.4f}{spread}" if len(pairs) else "no matched pairs"
        rows.append([level, f"{mean:.4f}", delta, len(pairs)])
    return CellTable(metric, headers, rows, [])
