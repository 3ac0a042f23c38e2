"""What the run directories say about a matrix: each job's state, counts, and the tables
`expmatrix plan` and `expmatrix status` print. Reads files only; starts nothing."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from expmatrix.config import Job
from expmatrix.matrix import Matrix
from expmatrix.provenance import is_stale
from expmatrix.store import RunStore

ORDER = ("new", "running", "interrupted", "preempted", "failed", "done", "stale")


@dataclass(frozen=True)
class JobState:
    job: Job
    state: str  # one of ORDER; `stale`: done, but by other code than the installed one
    status: dict[str, Any]


def job_states(matrix: Matrix, store: RunStore) -> list[JobState]:
    out = []
    for job in matrix.jobs:
        status = store.status(job.id)
        state = store.state(job.id, status)
        out.append(JobState(job, "stale" if state == "done" and is_stale(status) else state, status))
    return out


def counts(states: list[JobState]) -> str:
    found = Counter(s.state for s in states)
    return ", ".join(f"{found[k]} {k}" for k in ORDER if found[k]) + f"  ({len(states)} jobs)"


def _one_line(text: str | None, width: int = 120) -> str:
    """The error on one line, folders cut from paths (`status` shows what went wrong, not where files live)."""
    text = re.sub(r"/(?:[^\s/:'\"]+/)+([^\s/:'\"]+)", r"\1", " ".join((text or "").split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _levels(job: Job) -> list[str]:
    return [*job.levels.values(), str(job.seed)]


def plan_table(matrix: Matrix, states: list[JobState], limit: int | None = 50) -> str:
    """Jobs grouped by state, at most `limit` per state."""
    parts = []
    for state in ORDER:
        rows = [[s.job.id, *_levels(s.job)] for s in states if s.state == state]
        if not rows:
            continue
        shown = rows if limit is None else rows[:limit]
        more = f"\n... and {len(rows) - len(shown)} more (--all)" if len(shown) < len(rows) else ""
        table = tabulate(shown, headers=["job", *matrix.factor_names, "seed"])
        parts.append(f"{state} ({len(rows)}):\n{table}{more}")
    return "\n\n".join(parts)


def status_tables(matrix: Matrix, states: list[JobState], store: RunStore) -> str:
    """Running jobs with their progress, resumable and failed ones with why."""
    now, parts = time.time(), []
    headers = ["job", *matrix.factor_names, "seed"]
    running = []
    for s in states:
        if s.state == "running":
            claim = store.claim_info(s.job.id) or {}
            beat = f"{claim.get('age', float('nan')):.0f} s ago"
            epoch = f"{s.status.get('epoch', 0)}/{s.status.get('epochs', '?')}"
            running.append([s.job.id, *_levels(s.job), epoch, claim.get("host", "?"), beat])
    if running:
        parts.append("running:\n" + tabulate(running, headers=[*headers, "epoch", "host", "heartbeat"]))
    resumable = [
        [s.job.id, *_levels(s.job), f"{s.status.get('epoch', 0)}/{s.status.get('epochs', '?')}", s.state]
        for s in states
        if s.state in ("interrupted", "preempted")
    ]
    if resumable:
        parts.append("to resume:\n" + tabulate(resumable, headers=[*headers, "epoch", "state"]))
    failed = [
        [s.job.id, *_levels(s.job), s.status.get("failures", 1), s.status.get("host"), _one_line(s.status.get("error"))]
        for s in states
        if s.state == "failed"
    ]
    if failed:
        parts.append("failed:\n" + tabulate(failed, headers=[*headers, "attempts", "host", "error"]))
    done = [s for s in states if s.state in ("done", "stale") and "wall_seconds" in s.status]
    if done:
        mean = sum(s.status["wall_seconds"] for s in done) / len(done)
        last = max(s.status.get("finished", 0) for s in done)
        parts.append(f"finished: {len(done)}, {mean:.0f} s per job on average, last {now - last:.0f} s ago")
    return "\n\n".join(parts)
