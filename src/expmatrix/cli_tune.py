"""`expmatrix tune ...`: equal-budget tuning of every arm, its best settings, its report, the tuned matrix."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import click

from expmatrix.cli_common import PROFILE, RUNS, SET, friendly


def tuning_of(experiment, profile, overrides, runs_root, arms=None, trials=None):
    from expmatrix.config import parse_set
    from expmatrix.tuning import Tuning

    names = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    return Tuning.load(experiment, profile, parse_set(overrides), runs_root, names, trials)


def _spawn(workers: int | None, threads: int | None, argv: list[str]) -> int:
    """Worker processes (`tune --worker`) sharing the journal, placed as `run` places its workers (GPUs, CPU
    threads: `placement.place`); a stop signal reaches them all. Exit status."""
    from expmatrix.executors.placement import place, visible_gpus
    from expmatrix.states import PREEMPTED_EXIT
    from expmatrix.stop import stop_requests

    cpus = os.cpu_count() or 1
    placed = place(visible_gpus(), cpus, workers or cpus, workers, threads)
    command = [sys.executable, "-m", "expmatrix", "tune", *argv, "--worker", "--threads", str(placed.threads)]
    procs = [subprocess.Popen(command, env={**os.environ, **placed.env(w)}) for w in range(placed.workers)]
    with stop_requests(on_stop=lambda signum: [p.send_signal(signum) for p in procs]):
        codes = [p.wait() for p in procs]
    return PREEMPTED_EXIT if PREEMPTED_EXIT in codes else max(codes)


@click.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--arms", default=None, metavar="F1,F2", help="Factors whose levels are the arms [default: tune.arms].")
@click.option("--trials", type=click.IntRange(min=1), default=None, help="Trials per arm [default: tune.trials].")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Local workers at once [default: as for `run`]."
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads per worker [CPUs/workers].")
@click.option(
    "--worker", "mode", flag_value="worker", help="Be one worker (an array task); exit when budgets are used."
)
@click.option("--export", "mode", flag_value="export", help="Write each arm's best settings to best/<arm>.yaml.")
@click.option("--report", "mode", flag_value="report", help="Write the tuning report (md, tex, html, plots).")
@click.option("--run", "mode", flag_value="run", help="Run the matrix with each arm's exported best settings.")
@friendly
def tune(experiment, profile, overrides, runs_root, arms, trials, workers, threads, mode) -> None:
    """Tune every arm of EXPERIMENT with the same budget (its `tune` section): one optuna study per arm in
    runs/<name>.tune/studies.journal, each trial an ordinary job in runs/<name>.tune/. Then --export the best
    settings, --report the tuning, and --run the tuned matrix (runs/<name>.tuned/, with its report).

    Exit status: 0 done, 1 an error, 75 stopped by a signal (run again to resume)."""
    tuning = tuning_of(experiment, profile, overrides, runs_root, arms, trials)
    if mode is None:
        argv = [experiment, "--runs", runs_root, *(["--profile", profile] if profile else [])]
        argv += [a for o in overrides for a in ("--set", o)] + (["--arms", arms] if arms else [])
        argv += ["--trials", str(tuning.tune.trials)]
        started = time.time()
        code = _spawn(workers, threads, argv)
        click.echo(f"{tuning.describe()}: workers ended in {time.time() - started:.0f} s ({tuning.files.dir})")
        sys.exit(code)
    if mode == "worker":
        from expmatrix.states import PREEMPTED_EXIT
        from expmatrix.tuning.worker import work

        states = work(tuning, threads or os.cpu_count() or 1, log=lambda line: click.echo(line))
        click.echo(f"worker {os.getpid()}: " + (", ".join(f"{n} {s}" for s, n in states.items()) or "no trial left"))
        sys.exit(PREEMPTED_EXIT if states["preempted"] else 0)
    if mode == "export":
        from expmatrix.tuning.export import export_best

        for path in export_best(tuning):
            click.echo(f"best settings: {path}")
    elif mode == "report":
        from expmatrix.report.formats import FORMATS
        from expmatrix.tuning.report import tuning_report

        report, written = tuning_report(tuning)
        click.echo(FORMATS["terminal"](report))
        click.echo(f"written to {tuning.files.dir}")
    else:
        run_tuned(tuning, runs_root, workers, threads)


def run_tuned(
    tuning, runs_root: str, workers: int | None, threads: int | None, retry_failed=False, gpus: list[int] | None = None
) -> None:
    """The tuned matrix through the ordinary local runner, then its report with the tuning stated."""
    from expmatrix.executors.local import run_local
    from expmatrix.inert import check_consumed
    from expmatrix.matrix import build_matrix
    from expmatrix.report.build import build_report, write_report
    from expmatrix.report.formats import FORMATS
    from expmatrix.report.settings import ReportSettings, task_of
    from expmatrix.report.two_runs import against_untuned
    from expmatrix.store import RunStore
    from expmatrix.tuning.export import tuned_matrix

    matrix, note = tuned_matrix(tuning)
    store = RunStore.for_spec(runs_root, matrix.spec)
    check_consumed(matrix, store)
    states, skipped = run_local(matrix, store, workers, threads, retry_failed, gpus)
    click.echo(", ".join(f"{n} {s}" for s, n in (states + skipped).items()) or "nothing to run")
    settings = ReportSettings.resolve(matrix.spec.report, None, None, task_of(matrix))
    report, results = build_report(matrix, store, settings, store.dir, matrix.spec.name)
    report.warnings.insert(0, note)
    write_report(report, results, store.dir)
    click.echo(FORMATS["terminal"](report))
    click.echo(f"written to {store.dir}")
    untuned = build_matrix(tuning.path, tuning.profile, tuning.overrides)
    click.echo(against_untuned(untuned, matrix, runs_root, store.dir / "against_untuned"))
    if states["failed"]:
        sys.exit(1)
