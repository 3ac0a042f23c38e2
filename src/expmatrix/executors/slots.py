"""One slot of an array task: the job it runs (its own, or the next one waiting to be (re)started) through
`run_job`, the same claim, resume and failure machinery as a local run, with one line per attempt in the job's
attempts file (task, scheduler ids, restart count, host, outcome), so a requeue is visible on disk.

A plain task has one slot (`worker.py`); a packed task runs K slots at once (`packed.py`).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from expmatrix.config import SpecError
from expmatrix.states import RESUMABLE
from expmatrix.stop import STOP_SIGNALS
from expmatrix.store import RunStore
from expmatrix.training.job import run_job

SCHEDULER_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SLURM_RESTART_COUNT", "CONDOR_JOB_ID", "_CONDOR_JOB_AD")

Result = tuple[str | None, str]  # (job id, final state) of one slot of a task


class Interrupted(BaseException):
    """USR1/TERM arrived while no trainer handler was installed: stop now, resume from the last
    checkpoint. A BaseException, so the job's own `except Exception` does not record it as a failure."""


@contextmanager
def stop_on_signals(then: signal.Handlers | None = None) -> Iterator[None]:
    """Turn the stop signals (`expmatrix.stop`) into `Interrupted` unless the trainer installs its own handler
    (it checkpoints mid-epoch and raises `Preempted`); outside training this still ends the task cleanly.
    On exit the previous handlers come back, or `then` (the worker ignores a warning that arrives
    after its job ended, so it still exits with the job's code)."""

    def handler(signum: int, _frame) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if then is None else then)


def candidates(job_ids: list[str], task: int, store: RunStore, since: float | None = None) -> Iterator[str]:
    """The task's own job unless it is done (or failed after `since`, the time the list was written: not
    retried by a requeue), then the others in ring order that wait to be (re)started: new, interrupted,
    preempted or damaged, the same ones `expmatrix run` takes. Claims keep it to one worker."""
    if not 0 <= task < len(job_ids):
        raise SpecError(f"task {task} is outside the job list (0..{len(job_ids) - 1})")
    state, status = store.state_of(job_ids[task])
    if state != "done" and not (state == "failed" and since is not None and status.get("finished", 0) > since):
        yield job_ids[task]
    for k in range(1, len(job_ids)):
        job_id = job_ids[(task + k) % len(job_ids)]
        if store.state(job_id) in RESUMABLE:
            yield job_id


def attempt(task: int) -> dict:
    """The start of an attempts.jsonl line: the task, this host and the scheduler's ids."""
    entry = {"task": task, "host": socket.gethostname(), "started": time.time()}
    return entry | {k.lower(): os.environ[k] for k in SCHEDULER_ENV if k in os.environ and k != "_CONDOR_JOB_AD"}


def run_one(store: RunStore, job_id: str, task: int, threads: int) -> str:
    """Run one job through `run_job`; an interruption outside the trainer is recorded as preempted."""
    entry = attempt(task)
    job = store.read_job(job_id)
    try:
        state = run_job(job, store, threads)
    except Interrupted as e:
        state = "done" if store.state(job_id) == "done" else "preempted"
        entry["signal"] = str(e)
        if state == "preempted":
            store.set_status(job_id, "preempted")
    if state != "claimed":
        store.log_attempt(job_id, entry | {"state": state, "ended": time.time()})
    return state


def run_slot(
    store: RunStore,
    job_ids: list[str],
    index: int,
    task: int,
    threads: int,
    since: float | None,
    stop: Callable[[], bool] | None = None,
) -> Result:
    """The first of `candidates(job_ids, index)` nobody else holds, run to its end; (None, 'nothing') if none.
    `stop()` true: a stop signal came before a job started (the task is requeued; nothing was lost)."""
    for job_id in candidates(job_ids, index, store, since):
        if stop is not None and stop():
            return None, "preempted"
        state = run_one(store, job_id, task, threads)
        if state != "claimed":
            return job_id, state
    return None, "nothing"
