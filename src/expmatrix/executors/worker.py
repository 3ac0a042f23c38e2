"""One array task: run job N of the submitted list, or the next one waiting to be (re)started.

The task index comes from `--task`, `$EXPMATRIX_TASK` (set by the HTCondor submit file to
`$(ProcId)`) or `$SLURM_ARRAY_TASK_ID`. The job itself goes through `run_job`, the same claim,
resume and failure machinery as a local run. Exit codes: 0 done (or nothing left), 1 failed,
PREEMPTED_EXIT (75) cut short after a checkpoint: the batch script requeues the task.
A packed task (`--jobs-per-task K`) runs jobs [N*K, (N+1)*K) at once: `packed.py`.

Each attempt appends a line to the job's attempts file (`RunStore.attempts_file`: task, scheduler ids,
restart count, host, outcome), so a requeue is visible on disk.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from expmatrix.config import SpecError
from expmatrix.runfiles import append_jsonl
from expmatrix.states import RESUMABLE
from expmatrix.stop import STOP_SIGNALS
from expmatrix.store import RunStore

TASK_ENV = ("EXPMATRIX_TASK", "SLURM_ARRAY_TASK_ID")
SCHEDULER_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SLURM_RESTART_COUNT", "CONDOR_JOB_ID", "_CONDOR_JOB_AD")
# the state a task reports for the states of its jobs, most urgent first: one preempted job requeues the task
# (lost: another worker took the job over, our heartbeat went stale; it is not a failure of this task)
TASK_STATES = ("preempted", "failed", "fit failed", "done", "lost", "nothing")

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


def task_index(task: int | None) -> int:
    if task is not None:
        return task
    for name in TASK_ENV:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    raise SpecError(f"no task index: pass --task N or set one of {', '.join(TASK_ENV)}")


def read_job_list(path: Path) -> list[str]:
    if not path.exists():
        raise SpecError(f"{path}: job list not found (written by `expmatrix submit`)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


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


def log_attempt(store: RunStore, job_id: str, entry: dict) -> None:
    append_jsonl(store.attempts_file(job_id), entry)


def attempt(task: int) -> dict:
    """The start of an attempts.jsonl line: the task, this host and the scheduler's ids."""
    entry = {"task": task, "host": socket.gethostname(), "started": time.time()}
    return entry | {k.lower(): os.environ[k] for k in SCHEDULER_ENV if k in os.environ and k != "_CONDOR_JOB_AD"}


def run_one(store: RunStore, job_id: str, task: int, threads: int) -> str:
    """Run one job through `run_job`; an interruption outside the trainer is recorded as preempted."""
    from expmatrix.config import Job
    from expmatrix.training.job import run_job

    entry = attempt(task)
    job = Job.from_record(store.read_job(job_id))
    try:
        state = run_job(job, store, threads)
    except Interrupted as e:
        state = "done" if store.state(job_id) == "done" else "preempted"
        entry["signal"] = str(e)
        if state == "preempted":
            store.set_status(job_id, "preempted")
    if state != "claimed":
        log_attempt(store, job_id, entry | {"state": state, "ended": time.time()})
    return state


def run_fit(store: RunStore, job_id: str) -> str:
    """A fit-stage task: the shared work (tokenizer fit) that job `job_id` needs, unless it is cached.

    A fit that fails is recorded in the cache (the jobs that need it fail with its error in the train
    array) and the task ends `fit failed` with exit status 0: the train array waits for the whole fit
    array to succeed, and the jobs that need no failed fit must still train."""
    from expmatrix.config import Job
    from expmatrix.stages import pending_stages, run_stage

    for stage in pending_stages([Job.from_record(store.read_job(job_id))], store):
        try:
            run_stage(stage, store)  # cached by its key: a second fit of the same key rewrites the same file
        except Exception as e:  # noqa: BLE001 - recorded by the stage; reported here, the arrays go on
            print(f"fit {stage.key} for job {job_id} failed: {type(e).__name__}: {e}", file=sys.stderr)
            return "fit failed"
    return "done"


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


def task_state(results: list[Result]) -> str:
    """What the task reports (and exits with) for its jobs' states: preempted before failed before done."""
    states = {state for _, state in results}
    return next((s for s in TASK_STATES if s in states), "nothing")


def run_task(
    store: RunStore, jobs_file: Path, task: int | None, threads: int, stage: str = "train", jobs_per_task: int = 1
) -> list[Result]:
    """(job id, final state) of each job this task ran; [(None, 'nothing')] when none was left."""
    job_ids = read_job_list(jobs_file)
    n = task_index(task)
    if stage == "fit":
        if not 0 <= n < len(job_ids):
            raise SpecError(f"task {n} is outside the job list (0..{len(job_ids) - 1})")
        return [(job_ids[n], run_fit(store, job_ids[n]))]
    since = jobs_file.stat().st_mtime  # written by `submit`: a job failed after it is not retried by a requeue
    if jobs_per_task > 1:
        from expmatrix.executors.packed import run_packed

        return run_packed(store, job_ids, n, threads, jobs_per_task, since)
    with stop_on_signals(then=signal.SIG_IGN):
        try:
            return [run_slot(store, job_ids, n, n, threads, since)]
        except Interrupted:  # between jobs: nothing of a job is lost
            return [(None, "preempted")]
