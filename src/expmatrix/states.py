"""The states a job can be in, which ones a run picks up, and the exit codes that carry them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from expmatrix.config.job import Job

# `interrupted` (its worker died) and `preempted` (it checkpointed on a signal) resume from the checkpoint;
# `damaged`: a file of its run directory cannot be read (RunStore.state_of); a run sets it aside and redoes the job.
# `pruned`: a tuning trial its study stopped early (`training.job.EndedEarly`): finished, not failed.
STATES = ("new", "running", "interrupted", "preempted", "damaged", "failed", "pruned", "done")
RESUMABLE = ("new", "interrupted", "preempted", "damaged")
# the fields that say why a job is in a state: dropped when it moves to another
STATE_FIELDS = {"failed": ("error", "traceback"), "preempted": ("reason", "preempted"), "pruned": ("pruned",)}

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: cut short after a checkpoint; run again (a batch script requeues) to resume
# "fit failed": recorded in the cache for the jobs that need it; the array goes on (the train array waits on it)
EXIT_CODES = {"done": 0, "nothing": 0, "lost": 0, "fit failed": 0, "failed": 1, "preempted": PREEMPTED_EXIT}


@dataclass
class Selection:
    """Which jobs a run trains, and why the others are left alone."""

    todo: list[Job] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def select_jobs(
    jobs: Iterable[Job], status: Callable[[str], tuple[str, dict[str, Any]]], max_attempts: int, retry_failed: bool
) -> Selection:
    """New, interrupted, preempted and damaged jobs always; failed ones with --retry-failed, until max_attempts.
    `status(job_id)` gives the job's (state, status record)."""
    out = Selection()
    for job in jobs:
        state, record = status(job.id)
        if state in RESUMABLE:
            out.todo.append(job)
        elif state == "failed" and not retry_failed:
            out.skipped["failed (use --retry-failed)"] += 1
        elif state == "failed" and record.get("failures", 0) >= max_attempts:
            out.skipped[f"failed {max_attempts} times (run.max_attempts)"] += 1
        elif state == "failed":
            out.todo.append(job)
        else:
            out.skipped[f"{state} already"] += 1
    return out
