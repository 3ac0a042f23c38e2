"""expmatrix command line: parse, call the library, print. The `data` and `tokenizer` tools are in cli_data.py
and cli_tokenizer.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from tabulate import tabulate

from expmatrix.cli_common import PROFILE, RUNS, SET, friendly
from expmatrix.cli_compare import compare
from expmatrix.cli_data import data
from expmatrix.cli_export import export
from expmatrix.cli_tokenizer import tokenizer
from expmatrix.cli_tune import tune


def _counts(counter) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counter.items()) if v)


def _store(matrix, runs_root: str):
    """The matrix's store with its own `run.stale_after_seconds`, the same for every command."""
    from expmatrix.store import RunStore

    return RunStore.for_spec(runs_root, matrix.spec)


def _matrix(experiment: str, profile: str | None, overrides: tuple[str, ...]):
    from expmatrix.config import parse_set
    from expmatrix.matrix import build_matrix

    return build_matrix(experiment, profile, parse_set(overrides))


@click.group()
@click.version_option(package_name="expmatrix")
def main() -> None:
    """Compare input tokenizations for transformers over a factor grid: run, report."""


@main.command("list")
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@friendly
def list_jobs(experiment: str, profile: str | None, overrides: tuple[str, ...], runs_root: str) -> None:
    """Print the jobs of EXPERIMENT: id, factor levels, seed, parameter count, width, state.

    The width that meets model.target_params is solved by building each cell's model on torch's meta
    device, so the first `list` of an experiment imports torch; the sizes are cached beside the runs,
    and a later `list` needs no torch."""
    from expmatrix.monitor import list_table

    matrix = _matrix(experiment, profile, overrides)
    click.echo(list_table(matrix, _store(matrix, runs_root)))


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--all", "show_all", is_flag=True, help="List every job (default: at most 50 per state).")
@friendly
def plan(experiment, profile, overrides, runs_root, show_all) -> None:
    """Count EXPERIMENT's jobs by state (new, running, interrupted, preempted, damaged, failed, done, stale)
    without running anything; `stale`: done by another package version or code; `damaged`: a file of its run
    directory cannot be read."""
    from expmatrix.monitor import counts, job_states, plan_table

    matrix = _matrix(experiment, profile, overrides)
    store = _store(matrix, runs_root)
    states = job_states(matrix, store)
    click.echo(plan_table(matrix, states, None if show_all else 50, store))
    click.echo(f"\n{matrix.spec.name}: {len(matrix.cells)} cells; " + counts(states))


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")
@friendly
def status(experiment, profile, overrides, runs_root, watch) -> None:
    """Progress of EXPERIMENT: counts by state, running jobs (epoch, host, heartbeat), failed and damaged ones, why."""
    import time

    from expmatrix.monitor import counts, job_states, status_tables

    matrix = _matrix(experiment, profile, overrides)
    store = _store(matrix, runs_root)
    while True:
        states = job_states(matrix, store)
        text = status_tables(matrix, states, store)
        if watch:
            click.clear()
            click.echo(time.strftime("%H:%M:%S "), nl=False)
        click.echo(f"{matrix.spec.name}: " + counts(states) + ("\n\n" + text if text else ""))
        if not watch:
            return
        time.sleep(watch)


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs trained at once [default: the CPU count; with CUDA 4 per GPU, at most one per CPU].",
)
@click.option("--gpus", default=None, metavar="0,1", help="CUDA devices the workers share [default: all visible].")
@click.option("--threads", type=int, default=None, help="Torch threads per job [default: CPUs / workers].")
@click.option("--retry-failed", is_flag=True, help="Also run failed jobs again (up to run.max_attempts).")
@click.option("--tuned", is_flag=True, help="Each arm with its best settings from `tune --export`, then the report.")
@friendly
def run(experiment, profile, overrides, runs_root, workers, gpus, threads, retry_failed, tuned) -> None:
    """Train every job of EXPERIMENT that is not done yet, in a local process pool.

    With CUDA the workers are spread over the GPUs, each worker seeing only its own device, and the
    CPU threads are split among them.

    Interrupted jobs resume from their checkpoint; jobs claimed by another live runner are left to it.
    Damaged jobs (a file cannot be read) are redone: the file is set aside, training resumes from the
    checkpoint if it loads, else starts again; the output says which.

    --tuned: the matrix with each arm's exported best settings (runs/<name>.tuned/) and its report, which
    states the equal tuning budgets: the same as `expmatrix tune EXPERIMENT --run`.
    """
    import time

    from expmatrix.executors.placement import parse_gpus

    if tuned:
        from expmatrix.cli_tune import run_tuned, tuning_of

        tuning = tuning_of(experiment, profile, overrides, runs_root)
        run_tuned(tuning, runs_root, workers, threads, retry_failed, parse_gpus(gpus))
        return

    from expmatrix.executors.local import run_local
    from expmatrix.inert import check_consumed
    from expmatrix.monitor import run_outcome

    matrix = _matrix(experiment, profile, overrides)
    store = _store(matrix, runs_root)
    check_consumed(matrix, store)
    started = time.time()
    states, skipped = run_local(matrix, store, workers, threads, retry_failed, parse_gpus(gpus))
    if not states:
        click.echo(f"nothing to train: {_counts(skipped)} ({store.dir})")
        return
    click.echo(f"{len(matrix.jobs)} jobs in {time.time() - started:.0f} s: {_counts(states)}")
    if skipped:
        click.echo(f"left alone: {_counts(skipped)}")
    outcome = run_outcome(matrix, store, started)
    for line in outcome:
        click.echo(line)
    failed = any(line.startswith("  failed") for line in outcome)
    click.echo(f"run directory: {store.dir}" + ("; see `expmatrix status`" if failed else ""))
    if states["failed"]:
        sys.exit(1)


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option(
    "--spec", "report_spec", type=click.Path(exists=True, dir_okay=False), help="A report spec (reports/*.yaml)."
)
@click.option("--metric", default=None, help="Metric that ranks cells and is compared [default: report.metric].")
@click.option("--metrics", default=None, help="Comma-separated columns of the cell table [default: report.metrics].")
@click.option("--baseline", multiple=True, metavar="FACTOR=LEVEL", help="Baseline level of a factor (repeatable).")
@click.option("--interaction", multiple=True, metavar="A:B", help="Two-way table of two factors (repeatable).")
@click.option("--top-k", type=int, default=None, help="Cells in the ranking and the ROC/learning-curve plots.")
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "latex", "html"]), default="terminal",
              show_default=True, help="What is printed; every format is written to --out.")  # fmt: skip
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output folder [default: runs/<experiment>]."
)
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the PNG/PDF plots.")
@click.option("--wide", is_flag=True, help="Print tables and warnings whole (by default every line fits 100 columns).")
@friendly
def report(experiment, profile, overrides, runs_root, report_spec, metric, metrics, baseline, interaction, top_k,
           fmt, out, plots, wide) -> None:  # fmt: skip
    """Compare the cells of EXPERIMENT: the verdict first, then tables, factor effects with CIs, plots, in every
    format (report.html: one interactive page that opens offline)."""
    from expmatrix.report import make_report
    from expmatrix.report.settings import parse_flags

    flags = parse_flags(metric, metrics, baseline, interaction, top_k)
    matrix = _matrix(experiment, profile, overrides)
    text, written = make_report(matrix, runs_root, profile, report_spec, flags, out, fmt, plots, wide)
    click.echo(text)
    click.echo(f"written to {written}")


@main.command()
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=int, default=None, help="Torch threads [default: all CPUs].")
@friendly
def train(job_file: str, threads: int | None) -> None:
    """Run one job from its JOB_FILE (runs/<experiment>/<id>/job.yaml), outside any matrix.

    Exit status: 0 done, 1 failed, 75 preempted (checkpointed on SIGTERM/SIGUSR1; run again to resume)."""
    from expmatrix.store import RunStore
    from expmatrix.training.job import run_job

    store, job = RunStore.for_job_file(job_file)
    state = run_job(job, store, threads or os.cpu_count() or 1)
    click.echo(f"job {job.id}: {state}")
    if state == "failed":
        raise click.ClickException(store.status(job.id).get("error", "failed"))
    if state == "preempted":  # checkpointed on a signal: run it again to resume (a batch script requeues)
        from expmatrix.states import PREEMPTED_EXIT

        sys.exit(PREEMPTED_EXIT)


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--backend", type=click.Choice(["slurm", "condor"]), default=None, help="[default: the profile's]")
@click.option("--cluster", default=None, help="Cluster profile: hpc/profiles/NAME.yaml, or a path to one.")
@click.option("--hpc", "hpc_overrides", multiple=True, metavar="KEY=VALUE", help="Override a cluster setting.")
@click.option("--max-concurrent", type=int, default=None, help="Array tasks running at once.")
@click.option(
    "--jobs-per-task", type=int, default=None, help="Training jobs one array task runs at once (hpc.jobs_per_task)."
)
@click.option("--retry-failed", is_flag=True, help="Also submit failed jobs again (up to run.max_attempts).")
@click.option("--tune", is_flag=True, help="Submit an array of tune workers (the `tune` section), not the jobs.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Tune workers (--tune).")
@click.option("--dry-run", is_flag=True, help="Write and print the files, submit nothing.")
@friendly
def submit(experiment, profile, overrides, runs_root, backend, cluster, hpc_overrides, max_concurrent, jobs_per_task,
           retry_failed, tune, workers, dry_run) -> None:  # fmt: skip
    """Submit the jobs of EXPERIMENT that are not done as SLURM or HTCondor arrays (or, with --tune, an array
    of tune workers), then exit."""
    from expmatrix.executors.submit import report_line, submit_matrix

    cli_hpc = _parse_hpc(hpc_overrides, max_concurrent=max_concurrent, jobs_per_task=jobs_per_task)
    tune_workers = workers if tune else 0
    prepared, submitted = submit_matrix(
        experiment, profile, overrides, runs_root, backend, cluster, cli_hpc, retry_failed, dry_run, tune_workers
    )
    click.echo(report_line(prepared, submitted, dry_run))


def _parse_hpc(items: tuple[str, ...], **options: int | None) -> dict:
    """--hpc KEY=VALUE, then the options that stand for a key (--max-concurrent, --jobs-per-task) over them."""
    from expmatrix.config import parse_set

    return parse_set(items) | {k: v for k, v in options.items() if v is not None}


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@RUNS
@click.option("--jobs", "jobs_file", required=True, type=click.Path(dir_okay=False), help="Job list of the array.")
@click.option("--task", type=int, default=None, help="[default: $EXPMATRIX_TASK or $SLURM_ARRAY_TASK_ID]")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads.")
@click.option("--stage", type=click.Choice(["fit", "train"]), default="train", show_default=True)
@click.option(
    "--jobs-per-task",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Training jobs this task runs at once: lines N*K .. N*K+K-1, the threads split among them.",
)
@friendly
def worker(experiment, runs_root, jobs_file, task, threads, stage, jobs_per_task) -> None:
    """Run one array task of a submitted EXPERIMENT: job N of the list, or the next one not started
    (with --jobs-per-task K: jobs N*K to N*K+K-1 at once)."""
    from expmatrix.config import load_experiment
    from expmatrix.executors.worker import run_task, task_state
    from expmatrix.states import EXIT_CODES
    from expmatrix.store import RunStore

    store = RunStore.for_spec(runs_root, load_experiment(experiment))
    results = run_task(store, Path(jobs_file), task, threads, stage, jobs_per_task)
    for job_id, state in results:
        click.echo(f"{stage} task {task if task is not None else '(env)'}: job {job_id}: {state}")
        if state == "failed" and job_id is not None:
            click.echo(store.status(job_id).get("error", "failed"), err=True)
    sys.exit(EXIT_CODES.get(task_state(results), 1))


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@friendly
def queue(experiment, profile, overrides, runs_root) -> None:
    """Jobs of a submitted EXPERIMENT as the run directories and the scheduler see them (one query)."""
    from expmatrix.executors.queue_status import reconcile

    matrix = _matrix(experiment, profile, overrides)
    rows, counts = reconcile(_store(matrix, runs_root), [j.id for j in matrix.jobs])
    click.echo(tabulate(rows, headers=["job", "on disk", "scheduler", "state"]))
    click.echo(", ".join(f"{n} {s}" for s, n in counts.most_common()))


main.add_command(data)
main.add_command(tokenizer)
main.add_command(tune)
main.add_command(export)
main.add_command(compare)
