"""One array task: run job N of the submitted list, or the next one waiting to be (re)started.

The task index comes from `--task`, `$EXPMATRIX_TASK` (set by the HTCondor submit file to
`$(ProcId)`) or `$SLURM_ARRAY_TASK_ID`. The job itself runs in a slot (`slots.py`): the same claim,
resume and failure machinery as a local run. Exit codes: 0 done (or nothing left), 1 failed,
PREEMPTED_EXIT (75) cut short after a checkpoint: the batch script requeues the task.
A packed task (`--jobs-per-task K`) runs K jobs at once: `packed.py`.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from expmatrix.config import SpecError
from expmatrix.executors.packed import run_packed
from expmatrix.executors.slots import Interrupted, Result, run_slot, stop_on_signals
from expmatrix.executors.tasks import read_job_list
from expmatrix.shared_stages import pending_stages, run_stage
from expmatrix.store import RunStore

TASK_ENV = ("EXPMATRIX_TASK", "SLURM_ARRAY_TASK_ID")
# the state a task reports for the states of its jobs, most urgent first: one preempted job requeues the task
# (lost: another worker took the job over, our heartbeat went stale; it is not a failure of this task)
TASK_STATES = ("preempted", "failed", "fit failed", "done", "lost", "nothing")


def task_index(task: int | None) -> int:
    if task is not None:
        return task
    for name in TASK_ENV:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    raise SpecError(f"no task index: pass --task N or set one of {', '.join(TASK_ENV)}")


def run_fit(store: RunStore, job_id: str) -> str:
    """A fit-stage task: the shared stages (tokenizer fit, pretraining) that job `job_id` needs, unless cached.

    A stage that fails is recorded in the cache (the jobs that need it fail with its error in the train
    array) and the task ends `fit failed` with exit status 0: the train array waits for the whole fit
    array to succeed, and the jobs that need no failed stage must still train."""
    for stage in pending_stages([store.read_job(job_id)], store):
        try:
            run_stage(stage, store)  # cached by its key: a second fit of the same key rewrites the same file
        except Exception as e:  # noqa: BLE001 - recorded by the stage; reported here, the arrays go on
            print(f"fit {stage.key} for job {job_id} failed: {type(e).__name__}: {e}", file=sys.stderr)
            return "fit failed"
    return "done"


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
        return run_packed(store, job_ids, n, threads, jobs_per_task, since)
    with stop_on_signals(then=signal.SIG_IGN):
        try:
            return [run_slot(store, job_ids, n, n, threads, since)]
        except Interrupted:  # between jobs: nothing of a job is lost
            return [(None, "preempted")]
