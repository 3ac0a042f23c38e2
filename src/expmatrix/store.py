"""Reading and writing a run directory: a job's record, status, results and state.

`RunPaths` (paths.py) names the files, `Claims` (claims.py) says who owns a job, `runfiles.py` makes every
write atomic and names damaged files; `RunStore` puts them together for one experiment. A file that exists
but cannot be read (truncated, empty, corrupt) raises `DamagedFile` naming the job and the file; `state_of`
calls such a job `damaged`; a run sets the file aside and redoes the job.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from expmatrix.claims import Claims
from expmatrix.config import STALE_AFTER_SECONDS, ExperimentSpec, Job, SpecError
from expmatrix.paths import JobPaths, RunPaths
from expmatrix.runfiles import (
    DamagedFile,
    append_jsonl,
    atomic_write,
    check_file,
    read_file,
    read_object,
    read_parquet,
    set_aside,
    write_json,
)
from expmatrix.states import STATE_FIELDS


class RunStore:
    """Run directories of one experiment under `root/<experiment>/`, and the shared `root/_cache/`."""

    def __init__(self, root: str | Path, experiment: str, stale_after: float = STALE_AFTER_SECONDS):
        self.paths = RunPaths(Path(root), experiment)
        self.claims = Claims(self.paths, stale_after)

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def dir(self) -> Path:
        return self.paths.dir

    @property
    def stale_after(self) -> float:
        return self.claims.stale_after

    def job(self, job_id: str) -> JobPaths:
        """The files of the job's run directory."""
        return self.paths.job(job_id)

    @classmethod
    def for_spec(cls, root: str | Path, spec: ExperimentSpec) -> RunStore:
        """The store of an `ExperimentSpec`, with its `run.stale_after_seconds`: every command agrees on `running`."""
        return cls(root, spec.name, spec.run.stale_after_seconds)

    @classmethod
    def for_job_file(cls, job_file: str | Path) -> tuple[RunStore, Job]:
        """(store, job) of `runs/<experiment>/<id>/job.yaml`, with the job's own run settings."""
        paths, job_id = RunPaths.of_record(Path(job_file))
        store = cls(paths.root, paths.experiment)
        job = store.read_job(job_id)
        if job.id != job_id:
            where = paths.job(job_id).record
            raise SpecError(f"{where}: holds job {job.id}, but its folder is {job_id} (a copied record?)")
        store.claims.stale_after = job.run.stale_after_seconds
        return store, job

    # ------------------------------------------------------------ reading

    def status(self, job_id: str) -> dict[str, Any]:
        """The status record ({'state': 'new'} before the first start); `DamagedFile` if unreadable."""
        p = self.job(job_id).status
        return read_object(p, job_id, "state") if p.exists() else {"state": "new"}

    def read_record(self, job_id: str) -> dict[str, Any]:
        """The job record as stored (who the job is, its config as plain data)."""
        return read_object(self.job(job_id).record, job_id, "id")

    def read_job(self, job_id: str) -> Job:
        """The job its record holds (the config validated again: a `SpecError` naming the file if it fails)."""
        return Job.from_record(self.read_record(job_id), self.job(job_id).record)

    def starts(self, job_id: str) -> list[dict[str, Any]]:
        p = self.job(job_id).starts
        return read_file(p, job_id) if p.exists() else []

    def history(self, job_id: str) -> list[dict[str, Any]]:
        return read_file(self.job(job_id).history, job_id)

    def metrics(self, job_id: str) -> dict[str, Any]:
        """Final metrics of a finished job; missing or unreadable: `DamagedFile` (its result is gone)."""
        p = self.job(job_id).metrics
        if not p.exists():
            raise DamagedFile(p, "missing, though the job is done", job_id)
        return read_object(p, job_id, "test")

    def predictions(self, job_id: str) -> Any:
        """Test predictions of a finished job, a polars frame."""
        return read_parquet(self.job(job_id).predictions, job_id)

    def check_results(self, job_id: str) -> None:
        """What a finished job left: metrics.json must be readable; the epoch log and predictions, if present."""
        self.metrics(job_id)
        for path in (self.job(job_id).history, self.job(job_id).predictions):
            if path.exists():
                check_file(path, job_id)

    def damaged_files(self, job_id: str) -> list[DamagedFile]:
        """Every file of the run directory that exists and cannot be read (the checkpoint's CRCs included)."""
        found = []
        for path in sorted(self.paths.job_dir(job_id).glob("*")):
            try:
                check_file(path, job_id)
            except DamagedFile as e:
                found.append(e)
        return found

    def job_ids(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name for p in self.dir.iterdir() if self.job(p.name).record.exists())

    # ------------------------------------------------------------ states

    def state_of(self, job_id: str) -> tuple[str, dict[str, Any]]:
        """(state, status record) of the job. `running` only while a live claim backs it, else `interrupted`;
        `damaged` (never an exception) when a file it needs cannot be read: the record names it."""
        status: dict[str, Any] = {}
        try:
            status = self.status(job_id)
            state = status["state"]
            if state == "running":
                claim = self.claims.info(job_id)
                if claim is None or self.claims.abandoned(claim):
                    state = "interrupted"  # its worker died without a word: resumable
            if state == "done":
                self.check_results(job_id)
            elif state in ("interrupted", "preempted") and self.job(job_id).checkpoint.exists():
                check_file(self.job(job_id).checkpoint, job_id, full=False)  # cheap: its end is intact
            return state, status
        except DamagedFile as e:
            return "damaged", {**status, "state": "damaged", "damaged": e.path.name, "error": str(e)}

    def state(self, job_id: str) -> str:
        return self.state_of(job_id)[0]

    # ------------------------------------------------------------ writing

    def set_status(self, job_id: str, state: str, **fields: Any) -> None:
        """Update the status record; a field given as None is removed."""
        try:
            old = self.status(job_id)
        except DamagedFile:
            set_aside(self.job(job_id).status)  # never overwrite what cannot be read
            old = {}
        status = {**old, "state": state, "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time()}
        status |= fields
        for other, keys in STATE_FIELDS.items():  # why a job failed or was preempted ends with that state
            if other != state:
                for key in keys:
                    status.pop(key, None)
        write_json(self.job(job_id).status, {k: v for k, v in status.items() if v is not None})

    def mark_failed(self, job_id: str, error: str, **fields: Any) -> None:
        """State `failed` with the error; `failures` counts how often (for run.max_attempts)."""
        try:
            failures = self.status(job_id).get("failures", 0) + 1
        except DamagedFile:
            failures = 1  # the count went with the damaged record (set_status sets it aside)
        self.set_status(job_id, "failed", error=error, failures=failures, finished=time.time(), **fields)

    def log_start(self, job_id: str, **fields: Any) -> None:
        """One line in starts.jsonl per training start."""
        row = {"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}
        append_jsonl(self.job(job_id).starts, row)

    def log_attempt(self, job_id: str, entry: dict[str, Any]) -> None:
        """One line in attempts.jsonl per array-task attempt."""
        append_jsonl(self.job(job_id).attempts, entry)

    def write_job(self, job: Job) -> None:
        atomic_write(self.job(job.id).record, yaml.safe_dump(job.record(), sort_keys=False))
