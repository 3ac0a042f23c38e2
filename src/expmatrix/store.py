"""The run-directory layout: one class owns every file name; every read and write of a run file goes
through it (the formats, atomic writes and damage checks are in runfiles.py).

runs/<experiment>/<job-id>/            RunStore.job_dir(id)
    job.yaml             job_file          the job record: id, cell, factor levels, seed, resolved config, run settings
    status.json          status_file       state (running/done/failed/preempted), host, pid, times, error, failures,
                                           epoch; `redone`: what was damaged and where its redo started
    claim                claim_file        exists while a worker owns the job (exclusive create); mtime = heartbeat
    starts.jsonl         starts_file       one line per training start (host, pid, time, resumed)
    attempts.jsonl       attempts_file     one line per array-task attempt (task, scheduler ids, host, outcome)
    tokenizer.json       tokenizer_file    fitted tokenizer state
    metrics.jsonl        history_file      one line per epoch
    metrics.json         metrics_file      final metrics, parameter count, which weights were evaluated
    predictions.parquet  predictions_file  test scores and labels (or directions)
    checkpoint.pt        checkpoint_file   latest epoch: model, optimizer, scheduler, RNG state, data position (a zip)
    wandb/                                 the job's wandb run (run.tracking: wandb)
    <name>.damaged-<time>                  a damaged file set aside before a redo (never deleted)
    .<name>.<pid>.tmp  .claim.<nonce>      a write or a claim takeover in flight (a kill leaves them; never read)
runs/<experiment>/_submit/             submit_dir
    <backend>-<hash>/    submission_dir    one folder per distinct submission (same inputs -> same folder)
        <stage>.jobs     jobs_list         the job ids of a stage's array, line N = task N (N // K if K per task)
        logs/            submission_logs   scheduler logs (unless hpc.log_dir)
        + the backend's rendered files (<stage>.sbatch | <stage>.sub + <stage>.sh, report.*, experiment.dag)
    submissions.jsonl    submissions_file  one line per real submission: folder, backend, scheduler ids, jobs_per_task
runs/<experiment>/report.*, results.parquet, tables/, plots/: what `expmatrix report` writes (report/build.py)
runs/_cache/                           cache_dir: shared by experiments, derived, safe to delete
    <source>_synthetic_e<events>_s<seed>.h5   generated data (named by `expmatrix.data.synthetic_path`)
    tokenizers/<key>.json  fit_file        a fitted tokenizer per tokenizer config and data selection
    consumed/<shape>.json  consumed_file   the config keys a job shape reads (the every-key check)
    sizes/<key>.json       size_file       width and parameter count of a tokenizer + model shape (`list`)
    pretrained/<key>/      pretrain_file   model.pt (backbone + record), record.json, checkpoint.pt, failed.json

A file that exists but cannot be read (truncated, empty, corrupt) raises `DamagedFile` naming the job and
the file; `state_of` calls such a job `damaged`; a run sets the file aside and redoes the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from expmatrix.config import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, ExperimentSpec, RunConfig, SpecError
from expmatrix.runfiles import (
    DamagedFile,
    append_jsonl,
    atomic_write,
    check_file,
    read_file,
    read_json,
    read_object,
    read_parquet,
    set_aside,
    write_json,
)
from expmatrix.states import STATE_FIELDS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_file(name: str) -> Callable[[RunStore, str], Path]:
    """A RunStore method: the path of file `name` in a job's run directory (the module docstring says what for)."""

    def path(store: RunStore, job_id: str) -> Path:
        return store.path(job_id, name)

    path.__doc__ = f"`<job-id>/{name}`"
    return path


class RunStore:
    """Run directories of one experiment under `root/<experiment>/`, and the shared `root/_cache/`."""

    def __init__(self, root: str | Path, experiment: str, stale_after: float = STALE_AFTER_SECONDS):
        self.root = Path(root)
        self.dir = self.root / experiment
        self.stale_after = stale_after
        self._nonces: dict[str, str] = {}  # job id -> nonce of the claims this process holds

    @classmethod
    def for_spec(cls, root: str | Path, spec: ExperimentSpec) -> RunStore:
        """The store of an `ExperimentSpec`, with its `run.stale_after_seconds`: every command agrees on `running`."""
        return cls(root, spec.name, spec.run.stale_after_seconds)

    @classmethod
    def for_job_file(cls, job_file: str | Path) -> tuple[RunStore, str]:
        """(store, job id) of `runs/<experiment>/<id>/job.yaml`, with the job's own run settings."""
        path = Path(job_file).resolve()
        store = cls(path.parents[min(2, len(path.parents) - 1)], path.parent.parent.name)
        job_id = path.parent.name
        if path != store.job_file(job_id) or len(path.parents) < 3:
            raise SpecError(f"{job_file}: not a job record runs/<experiment>/<job-id>/{store.job_file(job_id).name}")
        record = store.read_job(job_id)
        if record["id"] != job_id:
            raise SpecError(f"{path}: holds job {record['id']}, but its folder is {job_id} (a copied record?)")
        store.stale_after = RunConfig.model_validate(record.get("run", {})).stale_after_seconds
        return store, job_id

    # ------------------------------------------------------------ layout

    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

    def path(self, job_id: str, name: str) -> Path:
        """A file of the job's run directory by name; the methods below name each one."""
        return self.job_dir(job_id) / name

    job_file = _run_file("job.yaml")
    status_file = _run_file("status.json")
    claim_file = _run_file("claim")
    starts_file = _run_file("starts.jsonl")
    attempts_file = _run_file("attempts.jsonl")
    tokenizer_file = _run_file("tokenizer.json")
    history_file = _run_file("metrics.jsonl")
    metrics_file = _run_file("metrics.json")
    predictions_file = _run_file("predictions.parquet")
    checkpoint_file = _run_file("checkpoint.pt")

    @property
    def cache_dir(self) -> Path:
        """Shared by experiments: generated data, fitted artifacts."""
        return self.root / "_cache"

    def fit_file(self, key: str) -> Path:
        return self.cache_dir / "tokenizers" / f"{key}.json"

    def fit_failure_file(self, key: str) -> Path:
        """Why the fit `key` failed: the jobs that need it fail with this until --retry-failed."""
        return self.cache_dir / "tokenizers" / f"{key}.failed.json"

    def pretrain_file(self, key: str, name: str = "model.pt") -> Path:
        return self.cache_dir / "pretrained" / key / name

    def consumed_file(self, shape: str) -> Path:
        return self.cache_dir / "consumed" / f"{shape}.json"

    def size_file(self, key: str) -> Path:
        return self.cache_dir / "sizes" / f"{key}.json"

    @property
    def submit_dir(self) -> Path:
        return self.dir / "_submit"

    def submission_dir(self, backend: str, digest: str) -> Path:
        return self.submit_dir / f"{backend}-{digest}"

    @property
    def submissions_file(self) -> Path:
        return self.submit_dir / "submissions.jsonl"

    @staticmethod
    def jobs_list(submission: Path, stage: str) -> Path:
        """The job list of a stage's array in a submission folder."""
        return submission / f"{stage}.jobs"

    @staticmethod
    def submission_logs(submission: Path) -> Path:
        return submission / "logs"

    # ------------------------------------------------------------ reading

    def status(self, job_id: str) -> dict[str, Any]:
        """The status record ({'state': 'new'} before the first start); `DamagedFile` if unreadable."""
        p = self.status_file(job_id)
        return read_object(p, job_id, "state") if p.exists() else {"state": "new"}

    def read_job(self, job_id: str) -> dict[str, Any]:
        return read_object(self.job_file(job_id), job_id, "id")

    def starts(self, job_id: str) -> list[dict[str, Any]]:
        p = self.starts_file(job_id)
        return read_file(p, job_id) if p.exists() else []

    def history(self, job_id: str) -> list[dict[str, Any]]:
        return read_file(self.history_file(job_id), job_id)

    def metrics(self, job_id: str) -> dict[str, Any]:
        """Final metrics of a finished job; missing or unreadable: `DamagedFile` (its result is gone)."""
        p = self.metrics_file(job_id)
        if not p.exists():
            raise DamagedFile(p, "missing, though the job is done", job_id)
        return read_object(p, job_id, "test")

    def predictions(self, job_id: str) -> Any:
        """Test predictions of a finished job, a polars frame."""
        return read_parquet(self.predictions_file(job_id), job_id)

    def check_results(self, job_id: str) -> None:
        """What a finished job left: metrics.json must be readable; the epoch log and predictions, if present."""
        self.metrics(job_id)
        for path in (self.history_file(job_id), self.predictions_file(job_id)):
            if path.exists():
                check_file(path, job_id)

    def damaged_files(self, job_id: str) -> list[DamagedFile]:
        """Every file of the run directory that exists and cannot be read (the checkpoint's CRCs included)."""
        found = []
        for path in sorted(self.job_dir(job_id).glob("*")):
            try:
                check_file(path, job_id)
            except DamagedFile as e:
                found.append(e)
        return found

    # ------------------------------------------------------------ states

    def state_of(self, job_id: str) -> tuple[str, dict[str, Any]]:
        """(state, status record) of the job. `running` only while a live claim backs it, else `interrupted`;
        `damaged` (never an exception) when a file it needs cannot be read: the record names it."""
        status: dict[str, Any] = {}
        try:
            status = self.status(job_id)
            state = status["state"]
            if state == "running":
                claim = self.claim_info(job_id)
                if claim is None or self.abandoned(claim):
                    state = "interrupted"  # its worker died without a word: resumable
            if state == "done":
                self.check_results(job_id)
            elif state in ("interrupted", "preempted") and self.checkpoint_file(job_id).exists():
                check_file(self.checkpoint_file(job_id), job_id, full=False)  # cheap: its end is intact
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
            set_aside(self.status_file(job_id))  # never overwrite what cannot be read
            old = {}
        status = {**old, "state": state, "host": socket.gethostname(), "pid": os.getpid(), "updated": time.time()}
        status |= fields
        for other, keys in STATE_FIELDS.items():  # why a job failed or was preempted ends with that state
            if other != state:
                for key in keys:
                    status.pop(key, None)
        write_json(self.status_file(job_id), {k: v for k, v in status.items() if v is not None})

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
        append_jsonl(self.starts_file(job_id), row)

    def write_job(self, record: dict[str, Any]) -> None:
        atomic_write(self.job_file(record["id"]), yaml.safe_dump(record, sort_keys=False))

    def job_ids(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name for p in self.dir.iterdir() if self.job_file(p.name).exists())

    # ------------------------------------------------------------ claims

    def claim_info(self, job_id: str) -> dict[str, Any] | None:
        """The claim's owner (host, pid, nonce) and `age`: seconds since its last heartbeat."""
        p = self.claim_file(job_id)
        try:
            text, mtime = p.read_text(), p.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:  # being written right now, or its writer died before writing
            info = {}
        return {**info, "age": time.time() - mtime, "raw": text}

    def abandoned(self, claim: dict[str, Any]) -> bool:
        if claim["age"] > self.stale_after:
            return True
        return claim.get("host") == socket.gethostname() and "pid" in claim and not _pid_alive(claim["pid"])

    def claim(self, job_id: str) -> bool:
        """Own the job: exclusive create of its claim file. An abandoned claim (its
        heartbeat older than `stale_after`, or its owner gone on this host) is taken over."""
        p = self.claim_file(job_id)
        p.parent.mkdir(parents=True, exist_ok=True)
        nonce = uuid.uuid4().hex
        for _ in range(3):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                old = self.claim_info(job_id)
                if old is None:
                    continue  # released meanwhile
                if not self.abandoned(old) or not self._take_over(p, old["raw"], nonce):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "nonce": nonce, "since": time.time()}, f)
            self._nonces[job_id] = nonce
            return True
        return False

    @staticmethod
    def _take_over(p: Path, stale: str, nonce: str) -> bool:
        """Move the abandoned claim aside; if a racing worker's fresh claim was moved instead, put it back."""
        aside = p.with_name(f".claim.{nonce}")
        try:
            os.rename(p, aside)
        except FileNotFoundError:
            return True  # someone else removed it: try to create ours
        if aside.read_text() != stale:
            with contextlib.suppress(FileExistsError):
                os.link(aside, p)
            aside.unlink()
            return False
        aside.unlink()
        return True

    def heartbeat(self, job_id: str) -> bool:
        """Touch our claim; False if it is no longer ours (taken over while we were stalled)."""
        info = self.claim_info(job_id)
        if info is None or info.get("nonce") != self._nonces.get(job_id):
            return False
        os.utime(self.claim_file(job_id))
        return True

    def release(self, job_id: str) -> None:
        """Drop our claim (never someone else's)."""
        info = self.claim_info(job_id)
        if info is not None and info.get("nonce") == self._nonces.pop(job_id, None):
            self.claim_file(job_id).unlink(missing_ok=True)


class Periodic:
    """Calls `tick()` every `every` seconds in a daemon thread while the `with` block runs,
    until the block ends or `tick` returns False."""

    def __init__(self, every: float, tick: Callable[[], bool | None], name: str = "periodic"):
        self.every, self.tick = every, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if self.tick() is False:
                    return
            except DamagedFile:
                continue  # a progress poll met a file a redo is about to set aside: the next tick reads the new one

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Heartbeat(Periodic):
    """While the `with` block runs, touch the job's claim every `every` seconds;
    `lost` is set if the claim stops being ours."""

    def __init__(self, store: RunStore, job_id: str, every: float = HEARTBEAT_SECONDS):
        self.store, self.job_id = store, job_id
        self.lost = threading.Event()
        super().__init__(every, self._beat, f"heartbeat-{job_id}")

    def _beat(self) -> bool:
        if self.store.heartbeat(self.job_id):
            return True
        self.lost.set()
        return False


# the file helpers that modules writing run files have imported from here
__all__ = ["DamagedFile", "Heartbeat", "Periodic", "RunStore", "atomic_write", "read_json", "write_json"]
