"""Converged or still learning: the validation trend over each cell's last epochs, and seeds that stalled.

Per finished job, a straight line through the validation metric of its last k epochs (k =
`report.plateau_epochs`, fewer when the job trained fewer; at least 2); its rise over those
epochs, in the direction of improvement, is the job's late gain. A cell is `still improving`
when the mean late gain over its seeds exceeds the seed-to-seed noise of its final validation
value (the standard deviation over seeds), i.e. the budget moves the result more than the seed
does; with one seed, when the gain exceeds the scatter of the last epochs about the line (or is
positive when that scatter cannot be measured). A comparison of an arm that has converged with
one still learning measures the training budget, not the tokenization.

A seed that never trained also stops improving, so the trend alone calls its cell converged. A
leave-one-out rule finds it: in a cell of at least `STALL_MIN_SEEDS` (3) seeds, a seed is `stalled`
when its final validation value is worse than the mean m of the other seeds' by more than
max(`STALL_SPREAD` (4) × their standard deviation s, `STALL_FLOOR` (0.25) × |m|). Under Gaussian
seed noise (x - m) / (s √(1 + 1/(n-1))) is Student t with n - 2 degrees of freedom: with 3 seeds s
rests on 2 values (1 degree of freedom, a Cauchy tail), so no multiple of s alone keeps ordinary
noise unflagged; the floor does. Simulated (200,000 Gaussian cells): with a seed sd of 2% of the
value (0.210, 0.205, 0.214 has 2.1%) no cell of 3 or 5 seeds is flagged; at 5%, 0.02% of 3-seed
cells; at 10%, 4.6% (3 seeds) and 2.5% (5 seeds). The spread term (4 s: one-sided p = 0.019 per
seed at 5 seeds) matters only for metrics that noisy. A seed at chance (AUROC 0.5 against 0.85,
41% behind) or the measured stall (angle 0.84 rad against 0.21, 300% behind) is far past the
floor; a seed only partly behind (AUROC 0.75 against 0.85, 12%) is not flagged. Two stalled seeds
among four or five inflate each other's s and may both pass. Nothing is dropped: the cell's
numbers keep the seed, and the report warns.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from expmatrix.report.collect import read_history
from expmatrix.report.effects import finished
from expmatrix.store import RunStore


def late_gain(values: np.ndarray, k: int, higher: bool) -> tuple[float, float | None]:
    """(rise of the fitted line over the last k values, in the improving direction; the points'
    standard deviation about the line, None with fewer than 3 points)."""
    y = values[-k:]
    x = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    scatter = float(np.sqrt(np.sum((y - (slope * x + intercept)) ** 2) / (len(y) - 2))) if len(y) > 2 else None
    return float(slope * (len(y) - 1) * (1 if higher else -1)), scatter


STALL_MIN_SEEDS = 3  # with 2 seeds, neither can be told from the other's noise
STALL_SPREAD = 4.0  # the other seeds' standard deviations a stalled seed is behind by, at least
STALL_FLOOR = 0.25  # and at least this share of the other seeds' mean


def stalled(finals: list[float], higher: bool) -> list[int]:
    """Positions of the seeds whose final value is far behind the others' (the module's rule); none with fewer
    than `STALL_MIN_SEEDS` finite values, and a non-finite value is never flagged."""
    x = np.asarray(finals, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(x))
    if len(ok) < STALL_MIN_SEEDS:
        return []
    out = []
    for i in ok:
        others = x[ok[ok != i]]
        m, s = float(others.mean()), float(others.std(ddof=1))
        behind = m - x[i] if higher else x[i] - m
        if behind > max(STALL_SPREAD * s, STALL_FLOOR * abs(m)):
            out.append(int(i))
    return out


def verdict(curves: list[np.ndarray], k: int, higher: bool, seeds: list | None = None) -> dict:
    """One cell from its seeds' validation curves (`seeds`: their names, 0.. by default): `epochs` (fewest),
    `late_gain` (mean over seeds), `noise`, `converged` ("yes", "still improving", or "n/a" when no curve has
    2 epochs) and `stalled` (the stalled seeds, comma-separated; "" for none)."""
    seeds = list(range(len(curves))) if seeds is None else seeds
    ended = [(s, c[-1]) for s, c in zip(seeds, curves, strict=True) if len(c)]
    stall = ", ".join(str(ended[i][0]) for i in stalled([v for _, v in ended], higher))
    curves = [c for c in curves if len(c) >= 2]
    if not curves:
        return {"epochs": None, "late_gain": None, "noise": None, "converged": "n/a", "stalled": stall}
    fits = [late_gain(c, min(k, len(c)), higher) for c in curves]
    gain = float(np.mean([g for g, _ in fits]))
    noise = float(np.std([c[-1] for c in curves], ddof=1)) if len(curves) > 1 else (fits[0][1] or 0.0)
    converged = "still improving" if gain > noise else "yes"
    epochs = min(len(c) for c in curves)
    return {"epochs": epochs, "late_gain": gain, "noise": noise, "converged": converged, "stalled": stall}


def convergence(
    results: pl.DataFrame, factors: list[str], store: RunStore, column: str, higher: bool, k: int
) -> pl.DataFrame:
    """One row per cell with a finished job: the factors and its `verdict` from the jobs' `column` per epoch."""
    rows = []
    for cell in finished(results).partition_by(factors, maintain_order=True):
        histories = {seed: read_history(store, job) for seed, job in zip(cell["seed"], cell["job"], strict=True)}
        curves = {s: h[column].drop_nulls().to_numpy().astype(np.float64) for s, h in histories.items() if column in h}
        rows.append({f: cell[f][0] for f in factors} | verdict(list(curves.values()), k, higher, list(curves)))
    types = {"epochs": pl.Int64, "late_gain": pl.Float64, "noise": pl.Float64, "stalled": pl.String}
    return pl.DataFrame(rows, schema_overrides=types, infer_schema_length=None)


def _named(cells: pl.DataFrame, factors: list[str], seeds: bool = False) -> str:
    """Up to 5 cells by their levels (with their stalled seeds), then how many more."""
    names = [
        ", ".join(f"{f}={r[f]}" for f in factors)
        + (f": seed{'s' * (',' in r['stalled'])} {r['stalled']}" if seeds else "")
        for r in cells.head(5).iter_rows(named=True)
    ]
    return "; ".join(names) + (f" and {cells.height - 5} more" if cells.height > 5 else "")


def convergence_warning(conv: pl.DataFrame, factors: list[str], column: str, k: int) -> list[str]:
    """Sentences above the effects: cells still improving, and cells with a stalled seed (up to 5 named each)."""
    out = []
    still = conv.filter(pl.col("converged") == "still improving")
    if not still.is_empty():
        last = min(k, int(still["epochs"].min()))
        out.append(
            f"not converged: {still.height} of {conv.height} cells were still improving {column} over their last"
            f" {last} epochs by more than their seed-to-seed noise ({_named(still, factors)}); effects involving"
            " them measure the training budget as much as the factor"
        )
    stuck = conv.filter(pl.col("stalled") != "")
    if not stuck.is_empty():
        out.append(
            f"stalled seeds: in {stuck.height} of {conv.height} cells a seed ended far behind its cell-mates in"
            f" {column} (worse than their mean by more than max({STALL_SPREAD:g} × their sd, {STALL_FLOOR:.0%} of"
            f" the mean)): {_named(stuck, factors, seeds=True)}; the cell's mean carries a seed that did not train,"
            " whatever the converged column says: run more seeds or look at that seed's learning curve"
            " (metrics.jsonl) before reading the cell or the effects involving it"
        )
    return out
