"""Run directories of an experiment -> one polars frame, one row per job."""

from __future__ import annotations

from typing import Any

import polars as pl

from expmatrix.matrix import Matrix
from expmatrix.store import RunStore, read_json


def _flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict) and k in ("test", "val"):
            out.update({f"{k}.{m}": x for m, x in v.items()})
        elif isinstance(v, int | float | str):
            out[k] = v
    return out


def collect(matrix: Matrix, store: RunStore) -> pl.DataFrame:
    """Every job of the matrix with its state; factor levels come from the job's own record on disk."""
    rows = []
    for job in matrix.jobs:
        state = store.state(job.id)
        levels = job.levels
        if store.path(job.id, "job.yaml").exists():
            levels = store.read_job(job.id)["levels"]  # what this run was trained as
        row = {"job": job.id, "cell": job.cell, **levels, "seed": job.seed, "state": state}
        if state == "done":
            row.update(_flatten_metrics(read_json(store.path(job.id, "metrics.json"))))
        elif state == "failed":
            row["error"] = store.status(job.id).get("error")
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def orphans(matrix: Matrix, store: RunStore) -> list[str]:
    """Run directories on disk that no job of this matrix owns (e.g. after editing a level)."""
    ids = {j.id for j in matrix.jobs}
    return [i for i in store.job_ids() if i not in ids]


def read_predictions(store: RunStore, job_id: str) -> pl.DataFrame:
    """Test predictions of a finished job (score, label, process); a missing file is an error naming the job."""
    path = store.path(job_id, "predictions.parquet")
    if not path.exists():
        raise FileNotFoundError(f"job {job_id}: no predictions at {path}")
    return pl.read_parquet(path)


def read_history(store: RunStore, job_id: str) -> pl.DataFrame:
    """Per-epoch log of a job (epoch, train_loss, val_loss, val_auroc, ...)."""
    path = store.path(job_id, "metrics.jsonl")
    if not path.exists():
        raise FileNotFoundError(f"job {job_id}: no per-epoch log at {path}")
    return pl.read_ndjson(path)
