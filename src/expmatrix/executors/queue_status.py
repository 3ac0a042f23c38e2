"""Reconcile the run directories with what the scheduler says: one batched query per backend per refresh.

The files on disk decide done and failed (and damaged, unless a task is queued to redo it); the scheduler
adds pending, running, requeued and held; a job whose task the scheduler has forgotten (or ended) while
its files say it never finished has `vanished` (killed without a word: submit again, it resumes from its
checkpoint).
"""

from __future__ import annotations

from collections import Counter

from expmatrix.executors.backend import Submitted
from expmatrix.executors.submit import get_backend
from expmatrix.executors.tasks import read_job_list, task_of
from expmatrix.runfiles import read_file
from expmatrix.store import RunStore

SCHEDULER_WORDS = {  # SLURM and HTCondor states -> one word
    "PENDING": "pending",
    "IDLE": "pending",
    "CONFIGURING": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
    "TRANSFERRING": "running",
    "REQUEUED": "requeued",
    "REQUEUE_FED": "requeued",
    "REQUEUE_HOLD": "held",
    "HELD": "held",
    "SUSPENDED": "held",
}


def submissions(store: RunStore) -> list[tuple[str, Submitted]]:
    """(folder name, scheduler ids) of every real submission, oldest first."""
    log = store.paths.submit.log
    if not log.exists():
        return []
    rows = read_file(log)  # a damaged line is a DamagedFile naming the file and the line
    return [(r["folder"], Submitted(r["backend"], r["ids"], r.get("jobs_per_task", {}))) for r in rows]


def scheduler_view(store: RunStore) -> dict[str, str]:
    """job id -> the scheduler's state of the task that last had it ('' once the scheduler forgot it)."""
    subs = submissions(store)
    states: dict[tuple[str, int], str] = {}
    for backend in sorted({s.backend for _, s in subs}):
        states |= get_backend(backend).query([s for _, s in subs if s.backend == backend])
    view: dict[str, str] = {}
    for folder, sub in subs:  # later submissions win
        for stage, array_id in sub.ids.items():
            jobs_file = store.paths.submit.folder(folder).jobs_list(stage)
            per_task = sub.jobs_per_task.get(stage, 1)  # a packed array: K jobs per task
            if jobs_file.exists():
                for line, job_id in enumerate(read_job_list(jobs_file)):
                    view[job_id] = states.get((array_id, task_of(line, per_task)), "")
    return view


def verdict(disk: str, scheduler: str | None) -> str:
    """One word per job from its disk state and its scheduler state (None: never submitted)."""
    if disk in ("done", "failed"):
        return disk
    word = SCHEDULER_WORDS.get(scheduler or "")
    if word:
        return word
    if disk in ("running", "damaged"):  # running: a live claim without a queued task (a local run, a laptop)
        return disk
    return "not submitted" if scheduler is None else "vanished"


def reconcile(store: RunStore, job_ids: list[str]) -> tuple[list[tuple[str, str, str, str]], Counter]:
    """Rows (job, disk state, scheduler state, verdict) and the count of verdicts."""
    view = scheduler_view(store)
    rows = []
    for job_id in job_ids:
        disk = store.state(job_id)
        rows.append((job_id, disk, view.get(job_id, "-") or "(gone)", verdict(disk, view.get(job_id))))
    return rows, Counter(r[3] for r in rows)
