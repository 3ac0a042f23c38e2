"""Converged or still learning: the validation trend over each cell's last epochs.

Per finished job, a straight line through the validation metric of its last k epochs (k =
`report.plateau_epochs`, fewer when the job trained fewer; at least 2); its rise over those
epochs, in the direction of improvement, is the job's late gain. A cell is `still improving`
when the mean late gain over its seeds exceeds the seed-to-seed noise of its final validation
value (the standard deviation over seeds), i.e. the budget moves the result more than the seed
does; with one seed, when the gain exceeds the scatter of the last epochs about the line (or is
positive when that scatter cannot be measured). A comparison of an arm that has converged with
one still learning measures the training budget, not the tokenization.
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


def verdict(curves: list[np.ndarray], k: int, higher: bool) -> dict:
    """One cell from its seeds' validation curves: `epochs` (fewest), `late_gain` (mean over seeds),
    `noise` and `converged` ("yes", "still improving", or "n/a" when no curve has 2 epochs)."""
    curves = [c for c in curves if len(c) >= 2]
    if not curves:
        return {"epochs": None, "late_gain": None, "noise": None, "converged": "n/a"}
    fits = [late_gain(c, min(k, len(c)), higher) for c in curves]
    gain = float(np.mean([g for g, _ in fits]))
    noise = float(np.std([c[-1] for c in curves], ddof=1)) if len(curves) > 1 else (fits[0][1] or 0.0)
    converged = "still improving" if gain > noise else "yes"
    return {"epochs": min(len(c) for c in curves), "late_gain": gain, "noise": noise, "converged": converged}


def convergence(
    results: pl.DataFrame, factors: list[str], store: RunStore, column: str, higher: bool, k: int
) -> pl.DataFrame:
    """One row per cell with a finished job: the factors and its `verdict` from the jobs' `column` per epoch."""
    rows = []
    for cell in finished(results).partition_by(factors, maintain_order=True):
        histories = [read_history(store, job) for job in cell["job"]]
        curves = [h[column].drop_nulls().to_numpy().astype(np.float64) for h in histories if column in h.columns]
        rows.append({f: cell[f][0] for f in factors} | verdict(curves, k, higher))
    types = {"epochs": pl.Int64, "late_gain": pl.Float64, "noise": pl.Float64}
    return pl.DataFrame(rows, schema_overrides=types, infer_schema_length=None)


def convergence_warning(conv: pl.DataFrame, factors: list[str], column: str, k: int) -> list[str]:
    """One sentence above the effects when some cells were still improving, naming up to 5 of them."""
    still = conv.filter(pl.col("converged") == "still improving")
    if still.is_empty():
        return []
    names = "; ".join(", ".join(f"{f}={r[f]}" for f in factors) for r in still.head(5).iter_rows(named=True))
    more = f" and {still.height - 5} more" if still.height > 5 else ""
    last = min(k, int(still["epochs"].min()))
    return [
        f"not converged: {still.height} of {conv.height} cells were still improving {column} over their last"
        f" {last} epochs by more than their seed-to-seed noise ({names}{more}); effects involving them measure"
        " the training budget as much as the factor"
    ]
