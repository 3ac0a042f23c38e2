"""Run a matrix's jobs in a local process pool, with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm import tqdm

from expmatrix.data import ensure_file
from expmatrix.matrix import Job, Matrix
from expmatrix.spec import DataConfig
from expmatrix.store import RunStore
from expmatrix.training.job import run_job


def _work(record: dict, root: str, experiment: str, threads: int) -> str:
    return run_job(Job.from_record(record), RunStore(root, experiment), threads)


def prepare_data(jobs: list[Job], store: RunStore) -> None:
    """Generate shared inputs once, before workers start (no two workers write one file)."""
    seen = set()
    for job in jobs:
        cfg = DataConfig.model_validate(job.config["data"])
        key = (job.data_path, cfg.synthetic.model_dump_json())
        if key not in seen:
            seen.add(key)
            ensure_file(cfg, job.data_path, store.cache_dir)


def run_local(
    matrix: Matrix,
    store: RunStore,
    workers: int,
    threads: int | None = None,
    retry_failed: bool = True,
) -> Counter:
    """Run every job not yet done; returns the count of final states."""
    todo = [j for j in matrix.jobs if store.state(j.id) != "done"]
    states = Counter({"skipped (done)": len(matrix.jobs) - len(todo)})
    if not retry_failed:
        todo = [j for j in todo if store.state(j.id) != "failed"]
    if not todo:
        return states
    prepare_data(todo, store)
    workers = max(1, min(workers, len(todo)))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(todo), desc=matrix.spec.name, unit="job", dynamic_ncols=True)

    def record(job: Job, state: str) -> None:
        states[state] += 1
        bar.update()
        if state == "failed":
            levels = " ".join(f"{k}={v}" for k, v in job.levels.items())
            bar.write(f"  job {job.id} ({levels}) failed: {store.status(job.id).get('error')}")

    if workers == 1:
        for job in todo:
            record(job, run_job(job, store, threads))
    else:
        ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(_work, j.record(), str(store.root), matrix.spec.name, threads): j for j in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    state = future.result()
                except Exception as e:  # the worker process itself died (killed, out of memory)
                    store.set_status(job.id, "failed", error=f"worker process died: {type(e).__name__}: {e}")
                    store.release(job.id)
                    state = "failed"
                record(job, state)
    bar.close()
    return states
