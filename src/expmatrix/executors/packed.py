"""A packed array task (`hpc.jobs_per_task: K`): task N runs jobs [N*K, (N+1)*K) of the list at once.

Each job runs in a process of its own (`Pool`), as the slot of an ordinary task would: the same
candidates (its own job, or the next one waiting), claim, heartbeat, checkpoint and attempts line,
with the task's CPU threads split among the K jobs and, where the task holds several GPUs, the jobs
spread over them (`placement.place`). A stop signal to the task reaches every job: each checkpoints
where it is and the task exits 75. A job that fails, or whose process dies (out of memory), is
recorded failed with the message; its neighbours go on.
"""

from __future__ import annotations

import signal
import socket
import sys
import time

from expmatrix.executors.placement import place, visible_gpus
from expmatrix.executors.pool import Pool
from expmatrix.executors.slots import Result, attempt, run_slot
from expmatrix.executors.tasks import task_lines
from expmatrix.stop import STOP_SIGNALS, stop_requests
from expmatrix.store import RunStore


def _slot(root: str, experiment: str, stale_after: float, job_ids: list[str], index: int, task: int,
          threads: int, since: float) -> Result:  # fmt: skip
    """One job of the task, in a pool process; a stop signal that comes before it starts leaves it to the requeue."""
    with stop_requests() as stop:  # the pool worker's request: set by the signal the task passes on
        return run_slot(RunStore(root, experiment, stale_after), job_ids, index, task, threads, since,
                        lambda: stop.signal is not None)  # fmt: skip


def _died(store: RunStore, job_ids: list[str], task: int, pid: int | None, why: str) -> Result:
    """A slot's process died (killed, out of memory): the job it held (its claim names the process) is failed."""
    host = socket.gethostname()
    for job_id in job_ids:
        claim = store.claims.info(job_id)
        if claim is not None and pid is not None and claim.get("pid") == pid and claim.get("host") == host:
            store.mark_failed(job_id, f"{why} (job {job_id} on {host})")
            store.log_attempt(job_id, attempt(task) | {"state": "failed", "error": why, "ended": time.time()})
            return job_id, "failed"
    return None, "failed"


def run_packed(
    store: RunStore, job_ids: list[str], task: int, threads: int, per_task: int, since: float
) -> list[Result]:
    """(job id, state) of each slot of task `task`, in list order. The `threads` of the task are split among
    `per_task` jobs; a stop signal is passed on to every slot, and ignored once they have ended."""
    slots = task_lines(len(job_ids), task, per_task)
    placed = place(visible_gpus(), threads, len(slots), len(slots), max(1, threads // per_task))
    args = (str(store.root), store.dir.name, store.stale_after, job_ids)
    tasks = {i: (_slot, (*args, i, task, placed.threads, since)) for i in slots}
    results: dict[int, Result] = {}
    try:
        with Pool(len(slots), [placed.env(s) for s in range(len(slots))]) as pool, stop_requests(on_stop=pool.stop):
            for event, i, value in pool.run(tasks):
                if event == "ok":
                    results[i] = value
                elif event == "skipped":  # stopped before its process took it: nothing started
                    results[i] = (None, "preempted")
                elif event == "died":
                    results[i] = _died(store, job_ids, task, pool.pids.get(i), value)
                elif event == "error":  # outside a job (run_job records its own failures)
                    print(f"task {task}, job line {i}: {value}", file=sys.stderr)
                    results[i] = (None, "failed")
    finally:
        for s in STOP_SIGNALS:  # a warning that comes after the jobs ended must not change the exit status
            signal.signal(s, signal.SIG_IGN)
    return [results[i] for i in slots]
