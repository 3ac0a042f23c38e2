"""Run a matrix's jobs in a local process pool: shared stages first, then the jobs, with progress."""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator

from tqdm import tqdm

from expmatrix.claims import Periodic
from expmatrix.config import Job
from expmatrix.datafiles import prepare_data
from expmatrix.executors.placement import place, visible_gpus
from expmatrix.executors.pool import Pool
from expmatrix.matrix import Matrix
from expmatrix.shared_stages import SharedStage, clear_failed_stages, pending_stages, run_stage
from expmatrix.states import select_jobs
from expmatrix.stop import Stopped, StopRequest, stop_requests
from expmatrix.store import RunStore
from expmatrix.training.job import run_job


def _work(job: Job, root: str, experiment: str, threads: int, stale_after: float) -> str:
    return run_job(job, RunStore(root, experiment, stale_after), threads)


def _stage(stage: SharedStage, root: str, experiment: str) -> None:
    run_stage(stage, RunStore(root, experiment))


class Board:
    """Progress: one bar for the matrix, one line per busy worker (epoch / total), refreshed
    from the jobs' status files by a background thread."""

    def __init__(self, name: str, total: int, workers: int, store: RunStore):
        self.store = store
        self.overall = tqdm(total=total, desc=name, unit="job", dynamic_ncols=True, disable=None)
        self.lines = [
            tqdm(total=1, position=i + 1, bar_format="  {desc}", leave=False)
            for i in range(workers if not self.overall.disable else 0)
        ]
        self.busy: dict[str, str] = {}  # job id -> its factor levels, while it trains
        self.states: Counter = Counter()
        self._refresh = Periodic(1.0, self._poll, "progress")

    def start(self, job: Job) -> None:
        self.busy[job.id] = job.describe()

    def finish(self, job: Job, state: str) -> None:
        self.busy.pop(job.id, None)
        self.states[state] += 1
        self.overall.update()
        self.overall.set_postfix_str(", ".join(f"{v} {k}" for k, v in sorted(self.states.items())))
        if state == "failed":
            self.overall.write(f"  job {job.id} ({job.levels}) failed: {self.store.status(job.id).get('error')}")
        elif self.overall.disable:
            print(f"[{sum(self.states.values())}/{self.overall.total}] job {job.id} {state}", flush=True)

    def _poll(self) -> None:
        busy = list(self.busy.items())
        for i, line in enumerate(self.lines):
            if i < len(busy):
                job_id, what = busy[i]
                st = self.store.status(job_id)
                line.set_description_str(f"{job_id} {what}: epoch {st.get('epoch', 0)}/{st.get('epochs', '?')}")
            else:
                line.set_description_str("")

    def __enter__(self) -> Board:
        self._refresh.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._refresh.__exit__()
        for line in self.lines:
            line.close()
        self.overall.close()


def run_local(
    matrix: Matrix,
    store: RunStore,
    workers: int | None = None,
    threads: int | None = None,
    retry_failed: bool = False,
    gpus: list[int] | None = None,
) -> tuple[Counter, Counter]:
    """Run every job that needs it; returns (final states of the jobs run, skipped jobs by reason).

    Shared stages (tokenizer fits) run first. Workers and threads are placed by `placement.place` (with
    CUDA: spread over `gpus`, default all visible, each worker seeing only its own). One CPU worker runs in
    this process; more, or any on a GPU, run in a pool whose dead workers are replaced: their job is
    marked failed and the others go on.
    A stop signal (`expmatrix.stop`): the running jobs checkpoint and end preempted, nothing new
    starts, and `Stopped` is raised with the counts."""
    selection = select_jobs(matrix.jobs, store.state_of, matrix.spec.run.max_attempts, retry_failed)
    todo = selection.todo
    if not todo:
        return Counter(), selection.skipped
    placed = place(visible_gpus(), os.cpu_count() or 1, len(todo), workers, threads, gpus)  # a bad --gpus stops here
    workers, threads = placed.workers, placed.threads
    prepare_data(todo, store)
    if retry_failed:
        clear_failed_stages(todo, store)
    stages = pending_stages(todo, store)
    root, name, stale_after = str(store.root), matrix.spec.name, matrix.spec.run.stale_after_seconds
    stage_tasks = {s.key: (_stage, (s, root, name)) for s in stages}
    job_tasks = {j.id: (_work, (j, root, name, threads, stale_after)) for j in todo}
    by_id = {j.id: j for j in todo}
    pools: list[Pool] = []
    board = Board(name, len(todo), workers, store)
    with board, stop_requests(on_stop=_stopping(board, pools)) as stop, contextlib.ExitStack() as stack:
        envs = [placed.env(slot) for slot in range(workers)]
        pool = stack.enter_context(Pool(workers, envs)) if workers > 1 or placed.devices else None
        pools += [pool] if pool is not None else []
        if stages:
            fits = _events(pool, stage_tasks, stop)
            for _ in tqdm(fits, total=2 * len(stages), desc="fit tokenizers", disable=None, leave=False):
                pass  # a failed fit is reported by each job that needs it
        not_started = 0
        for event, job_id, value in _events(pool, job_tasks, stop):
            job = by_id[job_id]
            if event == "start":
                board.start(job)
            elif event == "skipped":
                not_started += 1
            else:
                if event != "ok":  # the worker died, or run_job itself broke
                    store.mark_failed(job_id, str(value))
                board.finish(job, value if event == "ok" else "failed")
    if stop.signal is not None:
        raise Stopped(stop.name, board.states, not_started)
    return board.states, selection.skipped


def _stopping(board: Board, pools: list[Pool]) -> Callable[[int], None]:
    """What the first stop signal does: say so, and pass it on to the pool's workers."""

    def on_stop(signum: int) -> None:
        board.overall.write(
            f"{signal.Signals(signum).name}: the running jobs checkpoint where they are; nothing new starts"
        )
        for pool in pools:
            pool.stop(signum)

    return on_stop


def _events(pool: Pool | None, tasks: dict, stop: StopRequest) -> Iterator[tuple[str, str, object]]:
    """Run tasks in the pool, or here one after another, as the pool's event stream."""
    if pool is not None:
        yield from pool.run(tasks)
        return
    for key, (fn, args) in tasks.items():
        if stop.signal is not None:
            yield "skipped", key, None
            continue
        yield "start", key, None
        try:
            yield "ok", key, fn(*args)
        except Exception as e:  # noqa: BLE001 - same report as from the pool
            yield "error", key, f"{type(e).__name__}: {e}"
