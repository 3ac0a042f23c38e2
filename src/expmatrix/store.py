"""The run-directory layout: one class owns every path, every write is atomic.

runs/<experiment>/<job-id>/
    job.yaml          the job record: id, cell, factor levels, seed, resolved config
    status.json       state (running/done/failed), host, pid, times, error
    claim             exists while a worker owns the job (exclusive create)
    tokenizer.json    fitted tokenizer state
    metrics.jsonl     one line per epoch
    metrics.json      final metrics, parameter count, which weights were evaluated
    predictions.parquet  test scores and labels
    checkpoint.pt     latest epoch: model, optimizer, scheduler, RNG state
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temp file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)


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

    def __init__(self, root: str | Path, experiment: str):
        self.root = Path(root)
        self.dir = self.root / experiment

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

    def state(self, job_id: str) -> str:
        state = self.status(job_id)["state"]
        if state == "running" and not self.path(job_id, "claim").exists():
            return "failed"  # a worker that died without a word; resumable
        return state

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
        if state != "failed":
            status.pop("error", None)
            status.pop("traceback", None)
        write_json(self.path(job_id, "status.json"), status)

    def write_job(self, record: dict[str, Any]) -> None:
        atomic_write(self.path(record["id"], "job.yaml"), yaml.safe_dump(record, sort_keys=False))

    def read_job(self, job_id: str) -> dict[str, Any]:
        return yaml.safe_load(self.path(job_id, "job.yaml").read_text())

    def claim(self, job_id: str) -> bool:
        """Own the job: exclusive create of its claim file. A claim left by a dead
        process on this host is taken over."""
        p = self.path(job_id, "claim")
        p.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = p.read_text().split()
                if len(owner) == 2 and owner[0] == socket.gethostname() and not _pid_alive(int(owner[1])):
                    p.unlink(missing_ok=True)
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}")
            return True
        return False

    def release(self, job_id: str) -> None:
        self.path(job_id, "claim").unlink(missing_ok=True)

    def job_ids(self) -> list[str]:
        if not self.dir.exists():
            return []
        return sorted(p.name for p in self.dir.iterdir() if (p / "job.yaml").exists())
