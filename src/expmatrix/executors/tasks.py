"""How a submitted job list maps onto array tasks: `K = hpc.jobs_per_task` jobs per task, task N runs the
lines [N*K, (N+1)*K) of the list (K = 1: task N runs line N). Said once here, for the backends (how many
tasks), the packed task (which lines) and `queue` (which task holds a line)."""

from __future__ import annotations

from pathlib import Path

from expmatrix.config import SpecError


def n_tasks(n_jobs: int, per_task: int = 1) -> int:
    """Array tasks for `n_jobs` lines: ceil(n_jobs / per_task)."""
    return -(-n_jobs // per_task)


def task_lines(n_jobs: int, task: int, per_task: int = 1) -> range:
    """The lines of the job list that task `task` runs; a `SpecError` outside the array."""
    tasks = n_tasks(n_jobs, per_task)
    if not 0 <= task < tasks:
        raise SpecError(f"task {task} is outside the array (0..{tasks - 1}: {n_jobs} jobs, {per_task} per task)")
    return range(task * per_task, min((task + 1) * per_task, n_jobs))


def task_of(line: int, per_task: int = 1) -> int:
    """The task that runs line `line` of the job list."""
    return line // per_task


def read_job_list(path: Path) -> list[str]:
    """The job ids of a submitted array, one per line (written by `expmatrix submit`)."""
    if not path.exists():
        raise SpecError(f"{path}: job list not found (written by `expmatrix submit`)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
