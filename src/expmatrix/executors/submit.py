"""`expmatrix submit`: choose the jobs, write their list and the rendered files, submit, record the ids.

Where they go (`runs/<experiment>/_submit/`: one folder per distinct submission, same inputs -> same folder,
same bytes; a log of real submissions) is `RunStore`'s layout; the rendered files are named by the backend.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expmatrix.config import Job, SpecError
from expmatrix.config.hpc import ClusterSettings, load_settings, read_profile
from expmatrix.datafiles import check_data, prepare_data
from expmatrix.executors.backend import ArrayStage, Backend, Plan, Submitted
from expmatrix.executors.condor import CondorBackend
from expmatrix.executors.slurm import SlurmBackend
from expmatrix.matrix import Matrix
from expmatrix.runfiles import append_jsonl, atomic_write
from expmatrix.shared_stages import clear_failed_stages, pending_stages
from expmatrix.states import select_jobs
from expmatrix.store import RunStore

if TYPE_CHECKING:
    from expmatrix.tuning import Tuning

BACKENDS: dict[str, type[Backend]] = {"slurm": SlurmBackend, "condor": CondorBackend}
DEFAULT_TEMPLATES = "../hpc"  # relative to the experiment file, like its tokenizer presets


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise SpecError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    return BACKENDS[name]()


def plan_stages(todo: list[Job], store: RunStore, jobs_per_task: int = 1) -> tuple[ArrayStage, ...]:
    """The arrays of a submission: tokenizer fits not cached yet (one task per fit, any job needing it
    stands for it), then the training jobs after them, `jobs_per_task` to a task. A pretraining stage
    plugs in here the same way."""
    if not todo:
        return ()
    # one task per job standing for a stage: its task runs every pending stage of that job (fit, pretrain)
    fits = tuple(dict.fromkeys(stage.recipe.job.id for stage in pending_stages(todo, store)))
    train = ArrayStage("train", tuple(j.id for j in todo), after=("fit",) if fits else (), jobs_per_task=jobs_per_task)
    return ((ArrayStage("fit", fits),) if fits else ()) + (train,)


def resolve_settings(
    matrix: Matrix, backend: str | None, cluster: str | None, cli: dict[str, Any]
) -> tuple[str, ClusterSettings, Path]:
    """(backend name, settings, templates folder) from profile < experiment `hpc:` < command line."""
    exp_hpc, cli = dict(matrix.spec.hpc), dict(cli)
    # where the templates are and which profile to start from: the command line, else the experiment
    templates = cli.pop("templates", None) or (matrix.path.parent / exp_hpc.pop("templates", DEFAULT_TEMPLATES))
    exp_hpc.pop("templates", None)
    cluster = cluster or cli.pop("cluster", None) or exp_hpc.pop("cluster", None)
    exp_hpc.pop("cluster", None)
    templates = Path(templates).resolve()
    layers = [(f"{matrix.path}: hpc.", exp_hpc), ("--hpc ", cli)]
    if cluster:
        layers.insert(0, (f"cluster profile {cluster}: ", read_profile(templates, cluster)))
    settings = load_settings(layers)
    name = backend or settings.backend
    if name is None:
        raise SpecError("no backend: pass --backend slurm|condor or use a cluster profile that sets `backend`")
    get_backend(name)
    return name, settings, templates


def submission_folder(store: RunStore, backend: str, content: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return store.paths.submit.submission(backend, digest).dir


@dataclass
class Prepared:
    backend: Backend
    plan: Plan
    files: dict[str, str]  # name -> content, as written
    skipped: Counter  # jobs left alone, by reason (done already, failed, running elsewhere)
    log: Path  # SubmitPaths.log: one line per real submission

    def submit(self) -> Submitted:
        done = self.backend.submit(self.plan)
        done.jobs_per_task = {st.name: st.jobs_per_task for st in self.plan.stages if st.jobs_per_task > 1}
        line = {"folder": self.plan.folder.name, "backend": done.backend, "ids": done.ids, "time": time.time()}
        line |= {"jobs_per_task": done.jobs_per_task} if done.jobs_per_task else {}
        append_jsonl(self.log, line)
        return done


def prepare(
    matrix: Matrix,
    store: RunStore,
    backend_name: str,
    settings: ClusterSettings,
    templates: Path,
    report_args: tuple[str, ...],
    retry_failed: bool = False,
    data: bool = True,
) -> Prepared:
    """Write the job records, job lists and rendered files of one submission. The data files are checked
    first (`datafiles.check_data`); `data` also generates shared inputs (synthetic data) once here, so array
    tasks never race to write them."""
    # the same choice as `expmatrix run`
    selection = select_jobs(matrix.jobs, store.state_of, matrix.spec.run.max_attempts, retry_failed)
    # the data first: a missing or broken file stops here, before anything is written or queued
    (prepare_data if data else check_data)(selection.todo, store)
    if retry_failed and data:
        clear_failed_stages(selection.todo, store)
    stages = plan_stages(selection.todo, store, settings.jobs_per_task)
    backend = get_backend(backend_name)
    content = {"stages": stages, "settings": settings.model_dump(), "report": report_args}
    content |= {"exp": str(matrix.path.resolve()), "runs": str(store.root.resolve())}
    folder = submission_folder(store, backend_name, content)
    plan = Plan(
        matrix.path.resolve(),
        matrix.spec.name,
        store.root.resolve(),
        folder.resolve(),
        templates,
        settings,
        stages,
        report_args,
    )
    files = backend.files(plan) if stages else {}
    if not stages:
        return Prepared(backend, plan, files, selection.skipped, store.paths.submit.log)
    jobs = {j.id: j for j in matrix.jobs}
    for st in stages:
        for job_id in st.job_ids:
            store.write_job(jobs[job_id])
        atomic_write(plan.jobs_file(st), "".join(f"{i}\n" for i in st.job_ids))
    write_files(plan, files)
    return Prepared(backend, plan, files, selection.skipped, store.paths.submit.log)


def write_files(plan: Plan, files: dict[str, str]) -> None:
    """The rendered files into the submission folder (scripts executable), and the log folder."""
    for name, text in files.items():
        atomic_write(plan.folder / name, text)
        if name.endswith(".sh"):
            (plan.folder / name).chmod(0o755)
    plan.log_dir.mkdir(parents=True, exist_ok=True)


def prepare_tune(tuning: Tuning, backend: str | None, cluster: str | None, cli_hpc: dict, workers: int,
                 args: tuple[str, ...]) -> Prepared:  # fmt: skip
    """The files of one array of `workers` tune workers (`expmatrix tune EXP --worker`, repeating `args`) that
    share the tuning's journal until every arm has its budget; a requeued task joins again. No report job:
    `expmatrix tune EXP --report` reads the studies."""
    store = tuning.files.trials
    check_data([arm.job for arm in tuning.arms], store)
    name, settings, templates = resolve_settings(tuning.matrix, backend, cluster, cli_hpc)
    settings = settings.model_copy(update={"report": False})
    content = {"tune": workers, "settings": settings.model_dump(), "args": args, "exp": str(tuning.path.resolve())}
    folder = submission_folder(store, name, content | {"runs": str(store.root.resolve())})
    stage = ArrayStage("tune", (), workers=workers)
    plan = Plan(tuning.matrix.path.resolve(), tuning.matrix.spec.name, store.root.resolve(), folder.resolve(),
                templates, settings, (stage,), args)  # fmt: skip
    chosen = get_backend(name)
    files = chosen.files(plan)
    write_files(plan, files)
    return Prepared(chosen, plan, files, Counter(), store.paths.submit.log)


def report_args(profile: str | None, overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The matrix options the report job repeats, so it expands the same jobs."""
    args = ["--profile", profile] if profile else []
    for item in overrides:
        args += ["--set", item]
    return tuple(args)


def submit_matrix(
    experiment: str,
    profile: str | None,
    overrides: tuple[str, ...],
    runs_root: str,
    backend: str | None,
    cluster: str | None,
    cli_hpc: dict[str, Any],
    retry_failed: bool,
    dry_run: bool,
    tune_workers: int = 0,
) -> tuple[Prepared, Submitted | None]:
    """What `expmatrix submit` does: prepare the submission, then submit it unless `dry_run`. With
    `tune_workers`, an array of that many tune workers (the experiment's `tune` section) instead."""
    from expmatrix.config import parse_set
    from expmatrix.inert import check_consumed
    from expmatrix.matrix import build_matrix
    from expmatrix.tuning import Tuning

    args = report_args(profile, overrides)
    if tune_workers:  # every tune error before anything is queued
        tuning = Tuning.load(experiment, profile, parse_set(overrides), runs_root)
        prepared = prepare_tune(tuning, backend, cluster, cli_hpc, tune_workers, args)
        return prepared, None if dry_run else prepared.submit()
    matrix = build_matrix(experiment, profile, parse_set(overrides))
    store = RunStore.for_spec(runs_root, matrix.spec)
    check_consumed(matrix, store)  # a setting no job reads is an error before anything is queued
    name, settings, templates = resolve_settings(matrix, backend, cluster, cli_hpc)
    prepared = prepare(matrix, store, name, settings, templates, args, retry_failed, data=not dry_run)
    if dry_run or not prepared.plan.stages:
        return prepared, None
    return prepared, prepared.submit()


def report_line(prepared: Prepared, submitted: Submitted | None, dry_run: bool) -> str:
    """What `submit` prints: the files (--dry-run), the commands, the scheduler ids, the jobs left alone."""
    plan = prepared.plan
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(prepared.skipped.items()))
    if not plan.stages:
        return f"nothing to submit: {skipped}"
    out = []
    if dry_run:
        out += [f"==> {plan.folder / name} <==\n{text}" for name, text in prepared.files.items()]
        out.append("would run:\n  " + "\n  ".join(prepared.backend.commands(plan)))
    arrays = ", ".join(f"{st.name} {st.tasks}" for st in plan.stages)
    packed = "; ".join(f"{st.name}: {len(st.job_ids)} jobs, {st.jobs_per_task} per task" for st in plan.stages
                       if st.jobs_per_task > 1)  # fmt: skip
    arrays += f" tasks ({packed})" if packed else " tasks"
    out.append(f"arrays: {arrays}" + (f" (left alone: {skipped})" if skipped else "") + f"\n{plan.folder}")
    if submitted:
        out.append("submitted: " + ", ".join(f"{k} {v}" for k, v in submitted.ids.items()))
    return "\n".join(out)
