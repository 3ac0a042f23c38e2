"""Run directories of an experiment -> one polars frame, one row per job."""

from __future__ import annotations

from typing import Any

import polars as pl

from expmatrix.config import Job
from expmatrix.matrix import Matrix
from expmatrix.runfiles import DamagedFile
from expmatrix.store import RunStore


def _flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict) and k in ("test", "val", "codebook"):  # codebook: a VQ tokenizer's health
            out.update({f"{k}.{m}": x for m, x in v.items()})
        elif isinstance(v, int | float | str):
            out[k] = v
    return out


def _row(job: Job, store: RunStore) -> dict[str, Any]:
    state, status = store.state_of(job.id)  # a damaged status, metrics.json or epoch log: `damaged`
    levels, row = job.levels, {}
    try:
        if store.job(job.id).record.exists():
            levels = store.read_record(job.id)["levels"]  # what this run was trained as
        if state == "done":
            row = _flatten_metrics(store.metrics(job.id))
    except DamagedFile as e:
        state, status = "damaged", {"error": str(e)}
    if state in ("failed", "damaged"):
        row["error"] = status.get("error")
    return {"job": job.id, "cell": job.cell, **levels, "seed": job.seed, "state": state, **row}


def collect(matrix: Matrix, store: RunStore) -> pl.DataFrame:
    """Every job of the matrix with its state; factor levels come from the job's own record on disk.
    A job with a file that cannot be read is `damaged`, its `error` names the file; the others go on."""
    return pl.DataFrame([_row(job, store) for job in matrix.jobs], infer_schema_length=None)


def orphans(matrix: Matrix, store: RunStore) -> list[str]:
    """Run directories on disk that no job of this matrix owns (e.g. after editing a level)."""
    ids = {j.id for j in matrix.jobs}
    return [i for i in store.job_ids() if i not in ids]


def read_predictions(store: RunStore, job_id: str) -> pl.DataFrame:
    """Test predictions of a finished job (score, label, process); a missing or damaged file is a
    `DamagedFile` naming the job."""
    return store.predictions(job_id)


def read_history(store: RunStore, job_id: str) -> pl.DataFrame:
    """Per-epoch log of a job (epoch, train_loss, val_loss, val_auroc, ...)."""
    path = store.job(job_id).history
    if not path.exists():
        raise DamagedFile(path, "missing, though the job is done", job_id)
    return pl.DataFrame(store.history(job_id), infer_schema_length=None)
