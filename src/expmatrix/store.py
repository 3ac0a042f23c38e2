"""The run-directory layout: one class owns every path, every write is atomic.

runs/<experiment>/<job-id>/
    job.yaml          the job record: id, cell, factor levels, seed, resolved config
    status.json       state (running/done/failed/preempted), host, pid, times, error, attempts
    claim             exists while a worker owns the job (exclusive create); its mtime is the heartbeat
    starts.jsonl      one line per training start (host, pid, time): how often the job was started
    tokenizer.json    fitted tokenizer state
    metrics.jsonl     one line per epoch
    metrics.json      final metrics, parameter count, which weights were evaluated
    predictions.parquet  test scores and labels
    checkpoint.pt     latest epoch: model, optimizer, scheduler, RNG state
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from expmatrix.config import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS
from expmatrix.states import STATE_FIELDS


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename over `path`: readers see the old or
    the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    if _crash_now(path.name):
        tmp.write_bytes(payload[: len(payload) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    tmp.write_bytes(payload)
    tmp.replace(path)


_writes: dict[str, int] = {}


def _crash_now(name: str) -> bool:
    """Fault injection for the reliability tests: EXPMATRIX_CRASH_WRITE=checkpoint.pt:2 kills this
    process halfway through its 2nd write of checkpoint.pt."""
    target, _, nth = os.environ.get("EXPMATRIX_CRASH_WRITE", "").partition(":")
    if target != name:
        return False
    _writes[name] = _writes.get(name, 0) + 1
    return _writes[name] == int(nth or 1)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True




class RunStore:
    """Run directories of one experiment under `root/<experiment>/`."""

    def __init__(self, root: str | Path, experiment: str, stale_after: float = STALE_AFTER_SECONDS):
        self.root = Path(root)
        self.dir = self.root / experiment
        self.stale_after = stale_after
        self._nonces: dict[str, str] = {}  # job id -> nonce of the claims this process holds

    @property
    def cache_dir(self) -> Path:
        """Shared by experiments: generated data, fitted artifacts."""
        return self.root / "_cache"

    def job_dir(self, job_id: str) -> Path:
        return self.dir / job_id

    def path(self, job_id: str, name: str) -> Path:
        return self.job_dir(job_id) / name

    def status(self, job_id: str) -> dict[str, Any]:
        p = self.path(job_id, "status.json")
        return read_json(p) if p.exists() else {"state": "new"}

    def state(self, job_id: str, status: dict[str, Any] | None = None) -> str:
        """The job's state; `running` only while a live claim backs it, else `interrupted`."""
        state = (status or self.status(job_id))["state"]
        if state == "running":
            claim = self.claim_info(job_id)
            if claim is None or self._abandoned(claim):
                return "interrupted"  # its worker died without a word: resumable
        return state

    def state_of(self, job_id: str) -> tuple[str, dict[str, Any]]:
        """(state, status record) of the job, read once."""
        status = self.status(job_id)
        return self.state(job_id, status), status

    def set_status(self, job_id: str, state: str, **fields: Any) -> None:
        old = self.status(job_id)
        status = {
            **old,
            "state": state,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "updated": time.time(),
            **fields,
        }
        for other, keys in STATE_FIELDS.items():  # why a job failed or was preempted ends with that state
            if other != state:
                for key in keys:
                    status.pop(key, None)
        write_json(self.path(job_id, "status.json"), status)

    def mark_failed(self, job_id: str, error: str, **fields: Any) -> None:
        """State `failed` with the error; `failures` counts how often (for run.max_attempts)."""
        failures = self.status(job_id).get("failures", 0) + 1
        self.set_status(job_id, "failed", error=error, failures=failures, finished=time.time(), **fields)

    def log_start(self, job_id: str, **fields: Any) -> None:
        """Append one line to starts.jsonl (appends of one short line are atomic)."""
        line = json.dumps({"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields})
        with open(self.path(job_id, "starts.jsonl"), "a") as f:
            f.write(line + "\n")

    def starts(self, job_id: str) -> list[dict[str, Any]]:
        p = self.path(job_id, "starts.jsonl")
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def write_job(self, record: dict[str, Any]) -> None:
        atomic_write(self.path(record["id"], "job.yaml"), yaml.safe_dump(record, sort_keys=False))

    def read_job(self, job_id: str) -> dict[str, Any]:
        return yaml.safe_load(self.path(job_id, "job.yaml").read_text())

    # ------------------------------------------------------------ claims

    def claim_info(self, job_id: str) -> dict[str, Any] | None:
        """The claim's owner (host, pid, nonce) and `age`: seconds since its last heartbeat."""
        p = self.path(job_id, "claim")
        try:
            text, mtime = p.read_text(), p.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:  # being written right now, or its writer died before writing
            info = {}
        return {**info, "age": time.time() - mtime, "raw": text}

    def _abandoned(self, claim: dict[str, Any]) -> bool:
        if claim["age"] > self.stale_after:
            return True
        return claim.get("host") == socket.gethostname() and "pid" in claim and not _pid_alive(claim["pid"])

    def claim(self, job_id: str) -> bool:
        """Own the job: exclusive create of its claim file. An abandoned claim (its
        heartbeat older than `stale_after`, or its owner gone on this host) is taken over."""
        p = self.path(job_id, "claim")
        p.parent.mkdir(parents=True, exist_ok=True)
        nonce = uuid.uuid4().hex
        for _ in range(3):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                old = self.claim_info(job_id)
                if old is None:
                    continue  # released meanwhile
                if not self._abandoned(old) or not self._take_over(p, old["raw"], nonce):
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
        os.utime(self.path(job_id, "claim"))
        return True

    def release(self, job_id: str) -> None:
        """Drop our claim (never someone else's)."""
        info = self.claim_info(job_id)
        if info is not None and info.get("nonce") == self._nonces.pop(job_id, None):
            self.path(job_id, "claim").unlink(missing_ok=True)

    def job_ids(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name for p in self.dir.iterdir() if (p / "job.yaml").exists())


class Periodic:
    """Calls `tick()` every `every` seconds in a daemon thread while the `with` block runs,
    until the block ends or `tick` returns False."""

    def __init__(self, every: float, tick: Callable[[], bool | None], name: str = "periodic"):
        self.every, self.tick = every, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.tick() is False:
                return

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
