"""What a batch scheduler backend is: a few small methods. The workflow lives in `submit.py`.

A backend turns a `Plan` (stages of jobs, settings, paths) into files, submits them with one
command per array, and reads its queue back in one batched query. SLURM and HTCondor each cost
one small class (submitit's shape).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from expmatrix.config.hpc import ClusterSettings
from expmatrix.executors.render import render
from expmatrix.executors.tasks import n_tasks
from expmatrix.paths import SubmissionPaths
from expmatrix.states import PREEMPTED_EXIT


class SchedulerError(RuntimeError):
    """A scheduler command failed; the message holds the command and its output."""


@dataclass(frozen=True)
class ArrayStage:
    """One array of jobs. `after` names stages that must all succeed first (SLURM afterok, DAG PARENT).

    Today a matrix has one stage, `train`; a tokenizer-fit or pretraining stage goes before it
    with `after=()` and the training stage gets `after=("fit",)`.
    """

    name: str
    job_ids: tuple[str, ...]
    after: tuple[str, ...] = ()
    jobs_per_task: int = 1  # jobs one array task runs at once (`hpc.jobs_per_task`): task i runs [i*K, (i+1)*K)
    workers: int = 0  # > 0: a stage of tune workers (`submit --tune`), one per task, no job list

    @property
    def tasks(self) -> int:
        """Array tasks: ceil(jobs / jobs_per_task), or the tune workers."""
        return self.workers or n_tasks(len(self.job_ids), self.jobs_per_task)


@dataclass(frozen=True)
class Plan:
    """Everything a template may show; all paths absolute, so a node finds them on the shared disk."""

    experiment: Path  # the experiment YAML
    name: str  # the experiment's name
    runs: Path  # runs root
    folder: Path  # this submission's folder: job lists, rendered files, logs
    templates: Path  # the hpc/ folder the templates come from
    settings: ClusterSettings
    stages: tuple[ArrayStage, ...]
    report_args: tuple[str, ...] = ()  # --profile/--set of the matrix, for the report job

    @property
    def job_name(self) -> str:
        return self.settings.job_name or f"expmatrix-{self.name}"

    @property
    def leaves(self) -> tuple[ArrayStage, ...]:
        """Stages no other stage waits for: the report waits for these."""
        parents = {a for st in self.stages for a in st.after}
        return tuple(st for st in self.stages if st.name not in parents)

    @property
    def log_dir(self) -> Path:
        return Path(self.settings.log_dir) if self.settings.log_dir else SubmissionPaths(self.folder).logs

    def jobs_file(self, stage: ArrayStage) -> Path:
        return SubmissionPaths(self.folder).jobs_list(stage.name)

    def worker_command(self, stage: ArrayStage) -> list[str]:
        """What one array task of `stage` runs: `expmatrix worker` on its job list, or a tune worker."""
        s, exp, runs = self.settings, str(self.experiment), str(self.runs)
        if stage.workers:
            return [*s.command, "tune", exp, "--runs", runs, *self.report_args, "--worker", "--threads", str(s.cpus)]
        cmd = [*s.command, "worker", exp, "--runs", runs, "--jobs", str(self.jobs_file(stage)), "--stage", stage.name]
        cmd += ["--threads", str(s.cpus)]
        return cmd + (["--jobs-per-task", str(stage.jobs_per_task)] if stage.jobs_per_task > 1 else [])

    def context(self, **more: Any) -> dict[str, Any]:
        s = self.settings
        return {
            "plan": self,
            "s": s,
            "experiment": str(self.experiment),
            "runs": str(self.runs),
            "folder": str(self.folder),
            "log_dir": str(self.log_dir),
            "job_name": self.job_name,
            "command": s.command,
            "report_args": list(self.report_args),
            "preempted_exit": PREEMPTED_EXIT,
            **more,
        }


@dataclass
class Submitted:
    """Scheduler ids of one real submission: stage -> id (array job id or DAGMan cluster)."""

    backend: str
    ids: dict[str, str] = field(default_factory=dict)
    jobs_per_task: dict[str, int] = field(default_factory=dict)  # stage -> K where K > 1 (see executors/tasks.py)


def run_command(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SchedulerError(f"{cmd[0]}: command not found (is this a {cmd[0]} submit host?)") from None
    if out.returncode != 0:
        raise SchedulerError(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or out.stdout).strip()}")
    return out.stdout


class Backend:
    """Subclasses set `name` and implement `files`, `submit` and `query`."""

    name = ""

    def render(self, plan: Plan, template: str, **more: Any) -> str:
        return render(plan.templates, f"{self.name}/{template}", plan.context(**more))

    def files(self, plan: Plan) -> dict[str, str]:
        """File name (in the submission folder) -> content."""
        raise NotImplementedError

    def commands(self, plan: Plan) -> list[str]:
        """What `submit` runs, for --dry-run (ids of earlier steps shown as placeholders)."""
        raise NotImplementedError

    def submit(self, plan: Plan) -> Submitted:
        raise NotImplementedError

    def query(self, submitted: list[Submitted]) -> dict[tuple[str, int], str]:
        """One batched scheduler query: (array id, task) -> scheduler state, for every task it still knows."""
        raise NotImplementedError
