"""Run directories of an experiment -> one polars frame, one row per job."""

from __future__ import annotations

from typing import Any

import polars as pl

from expmatrix.config import Job, SpecError
from expmatrix.matrix import Matrix
from expmatrix.runfiles import DamagedFile, read_file
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
            # what this run was trained as; a factor added to the experiment since (the config, so the id, the
            # same) takes the level the matrix gives it now
            levels = {**job.levels, **store.read_record(job.id)["levels"]}
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


def collect_dir(store: RunStore) -> tuple[pl.DataFrame, list[str]]:
    """(every job of a run directory, as `collect`; its factors), from the jobs' own records: for a run whose
    experiment file changed or is not at hand. Two jobs of one cell and seed (two profiles in one directory)
    are an error: name the experiment and profile instead."""
    jobs = [store.read_job(i) for i in store.job_ids()]
    if not jobs:
        raise SpecError(f"{store.dir}: no job record (job.yaml) in it: not a run directory")
    seen: dict[tuple, str] = {}
    for job in jobs:
        key = (*job.levels.items(), job.seed)
        if key in seen:
            raise SpecError(
                f"{store.dir}: jobs {seen[key]} and {job.id} are both {job.describe()} (two profiles or settings in"
                " one directory): compare EXPERIMENT.yaml@PROFILE instead"
            )
        seen[key] = job.id
    return pl.DataFrame([_row(job, store) for job in jobs], infer_schema_length=None), list(jobs[0].levels)


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


def read_codebook_health(store: RunStore, job_id: str) -> list[dict[str, Any]] | None:
    """Per pretraining epoch, the codebook health of a VQ job's tokenizer (utilisation, perplexity, ...); None
    for a tokenizer without a codebook."""
    path = store.job(job_id).tokenizer
    if not path.exists():
        return None
    state = read_file(path, job_id)
    found = [v["health"] for v in state.values() if isinstance(v, dict) and isinstance(v.get("health"), dict)]
    return found[0].get("history") if found else None
