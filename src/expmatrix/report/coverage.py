"""What a report leaves out: unfinished, failed and damaged jobs, missing cells and seeds, undefined metrics.

Each becomes a sentence stated above the tables; nothing is silently averaged over.
"""

from __future__ import annotations

from collections import Counter

import polars as pl


def _levels(r: dict, factors: list[str]) -> str:
    return ", ".join(f"{f}={r[f]}" for f in factors)


def job_states(results: pl.DataFrame) -> list[str]:
    counts = Counter(results["state"].to_list())
    if counts["done"] == results.height:
        return []
    left = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if state != "done")
    return [f"partial results: {counts['done']} of {results.height} jobs done; left out: {left}"]


def failed_jobs(results: pl.DataFrame, factors: list[str]) -> list[str]:
    """Failed and damaged jobs with their error (a damaged one's names the file; `expmatrix run` redoes it)."""
    failed = results.filter(pl.col("state").is_in(["failed", "damaged"]))
    return [
        f"{r['state']} job {r['job']} ({_levels(r, factors)}, seed {r['seed']}): {r.get('error')}"
        for r in failed.iter_rows(named=True)
    ]


def missing_cells_and_seeds(results: pl.DataFrame, factors: list[str]) -> list[str]:
    """Cells with no finished job, and cells with some seeds unfinished (which ones)."""
    out = []
    per_cell = results.group_by(factors, maintain_order=True).agg(
        pl.col("seed").filter(pl.col("state") != "done").sort().alias("open"), pl.len().alias("n")
    )
    if (per_cell["open"].list.len() == per_cell["n"]).all():
        return [f"missing: all {per_cell.height} cells (no finished job)"]
    for r in per_cell.iter_rows(named=True):
        if len(r["open"]) == r["n"]:
            out.append(f"missing cell (no finished job): {_levels(r, factors)}")
        elif r["open"]:
            seeds = ", ".join(map(str, r["open"]))
            out.append(
                f"cell {_levels(r, factors)}: {r['n'] - len(r['open'])} of {r['n']} seeds finished (missing: {seeds})"
            )
    return out


def undefined_metrics(results: pl.DataFrame, metrics: list[str]) -> list[str]:
    """Metrics that are null in finished jobs (a working point beyond the test set's resolution)."""
    done = results.filter(pl.col("state") == "done")
    out = []
    for m in metrics:
        n = done[m].null_count()
        if n:
            out.append(
                f"{m} is n/a in {n} of {done.height} finished jobs (a working point the test set is too small to"
                " resolve, or a job from before the metric existed); they are left out of its mean"
            )
    return out


def coverage(results: pl.DataFrame, factors: list[str], metrics: list[str]) -> list[str]:
    return (
        job_states(results)
        + failed_jobs(results, factors)
        + missing_cells_and_seeds(results, factors)
        + undefined_metrics(results, metrics)
    )
