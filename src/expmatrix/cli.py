"""expmatrix command line: parse, call the library, print."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click
from tabulate import tabulate

RUNS = click.option(
    "--runs",
    "runs_root",
    default=lambda: os.environ.get("EXPMATRIX_RUNS", "runs"),
    show_default="runs (or $EXPMATRIX_RUNS)",
    type=click.Path(file_okay=False),
    help="Root folder of run directories.",
)
PROFILE = click.option("--profile", default=None, help="A profile of the experiment, e.g. quick.")
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")


def friendly(fn):
    """Known errors become one clear line and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from expmatrix.config import SpecError
        from expmatrix.data import DataError
        from expmatrix.executors.backend import SchedulerError
        from expmatrix.models.sizing import BudgetError
        from expmatrix.tokenizers import TokenizerError

        try:
            return fn(*args, **kwargs)
        except (SpecError, DataError, TokenizerError, BudgetError, SchedulerError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def _counts(counter) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counter.items()) if v)


def _store(matrix, runs_root: str):
    from expmatrix.store import RunStore

    return RunStore(runs_root, matrix.spec.name, matrix.spec.run.stale_after_seconds)


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
    """Print the jobs of EXPERIMENT: id, factor levels, seed, parameter count, state."""
    from expmatrix.config import JobConfig, n_outputs
    from expmatrix.models.sizing import solve_size
    from expmatrix.stages import tokenizer_for
    from expmatrix.store import RunStore

    matrix = _matrix(experiment, profile, overrides)
    store = RunStore(runs_root, matrix.spec.name)
    rows = []
    for job in matrix.jobs:
        cfg = JobConfig.model_validate(job.config)
        size = solve_size(tokenizer_for(cfg), cfg.model, n_outputs(cfg.data))
        rows.append([job.id, *job.levels.values(), job.seed, size.params, size.d_model, store.state(job.id)])
    click.echo(tabulate(rows, headers=["job", *matrix.factor_names, "seed", "params", "width", "state"]))
    click.echo(f"{len(matrix.jobs)} jobs in {len(matrix.cells)} cells")


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--all", "show_all", is_flag=True, help="List every job (default: at most 50 per state).")
@friendly
def plan(experiment, profile, overrides, runs_root, show_all) -> None:
    """Count EXPERIMENT's jobs by state (new, running, interrupted, preempted, failed, done, stale) without
    running anything; `stale`: done by another package version or code."""
    from expmatrix.monitor import counts, job_states, plan_table

    matrix = _matrix(experiment, profile, overrides)
    states = job_states(matrix, _store(matrix, runs_root))
    click.echo(plan_table(matrix, states, None if show_all else 50))
    click.echo(f"\n{matrix.spec.name}: {len(matrix.cells)} cells; " + counts(states))


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")
@friendly
def status(experiment, profile, overrides, runs_root, watch) -> None:
    """Progress of EXPERIMENT: counts by state, running jobs (epoch, host, heartbeat), failed jobs and why."""
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
    "--workers", type=int, default=lambda: os.cpu_count() or 1, show_default="CPU count", help="Jobs trained at once."
)
@click.option("--threads", type=int, default=None, help="Torch threads per job [default: CPUs / workers].")
@click.option("--retry-failed", is_flag=True, help="Also run failed jobs again (up to run.max_attempts).")
@friendly
def run(experiment, profile, overrides, runs_root, workers, threads, retry_failed) -> None:
    """Train every job of EXPERIMENT that is not done yet, in a local process pool.

    Interrupted jobs resume from their checkpoint; jobs claimed by another live runner are left to it.
    """
    import time

    from expmatrix.executors.local import run_local
    from expmatrix.inert import check_consumed

    matrix = _matrix(experiment, profile, overrides)
    store = _store(matrix, runs_root)
    check_consumed(matrix, store.cache_dir)
    started = time.time()
    states, skipped = run_local(matrix, store, workers, threads, retry_failed)
    if not states:
        click.echo(f"nothing to train: {_counts(skipped)} ({store.dir})")
        return
    click.echo(f"{len(matrix.jobs)} jobs in {time.time() - started:.0f} s: {_counts(states)}")
    if skipped:
        click.echo(f"left alone: {_counts(skipped)}")
    failed = [j for j in matrix.jobs if store.state(j.id) == "failed"]
    for job in failed[:10]:
        click.echo(f"  failed {job.id} {job.describe()}: {store.status(job.id).get('error')}")
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
@friendly
def report(experiment, profile, overrides, runs_root, report_spec, metric, metrics, baseline, interaction, top_k,
           fmt, out, plots) -> None:  # fmt: skip
    """Compare the cells of EXPERIMENT: tables, factor effects with CIs, plots, in every format."""
    from expmatrix.report import make_report
    from expmatrix.report.settings import parse_flags

    flags = parse_flags(metric, metrics, baseline, interaction, top_k)
    matrix = _matrix(experiment, profile, overrides)
    text, written = make_report(matrix, runs_root, profile, report_spec, flags, out, fmt, plots)
    click.echo(text)
    click.echo(f"written to {written}")


@main.command()
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=int, default=None, help="Torch threads [default: all CPUs].")
@friendly
def train(job_file: str, threads: int | None) -> None:
    """Run one job from its JOB_FILE (runs/<experiment>/<id>/job.yaml), outside any matrix.

    Exit status: 0 done, 1 failed, 75 preempted (checkpointed on SIGTERM/SIGUSR1; run again to resume)."""
    import yaml

    from expmatrix.config import Job
    from expmatrix.store import RunStore
    from expmatrix.training.job import run_job

    path = Path(job_file).resolve()
    job = Job.from_record(yaml.safe_load(path.read_text()))
    store = RunStore(path.parent.parent.parent, path.parent.parent.name)
    state = run_job(job, store, threads or os.cpu_count() or 1)
    click.echo(f"job {job.id}: {state}")
    if state == "failed":
        raise click.ClickException(store.status(job.id).get("error", "failed"))
    if state == "preempted":  # checkpointed on a signal: run it again to resume (a batch script requeues)
        from expmatrix.states import PREEMPTED_EXIT

        sys.exit(PREEMPTED_EXIT)


@main.group()
def data() -> None:
    """Data tools."""


@data.command("synth")
@click.argument("source", type=click.Choice(["fourtops", "icecube"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .h5 file to write.")
@click.option("--events", type=int, default=100_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(source: str, out: str, events: int, seed: int) -> None:
    """Write a synthetic data set in the exact layout of SOURCE (fourtops: 4tops_splitted.h5; icecube: pulses)."""
    from expmatrix.data import WRITERS

    click.echo(f"wrote {WRITERS[source](out, events, seed)} ({events} events, seed {seed})")


@data.command("icecube-kaggle")
@click.argument("meta", type=click.Path(dir_okay=False))
@click.argument("geometry", type=click.Path(dir_okay=False))
@click.argument("batches", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .h5 file to write.")
@click.option("--max-pulses", type=click.IntRange(min=1), default=128, show_default=True, help="Pulses kept per event.")
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True, help="Shares of train,val,test.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Of the split of the events.")
@friendly
def icecube_kaggle(meta, geometry, batches, out, max_pulses, fractions, seed) -> None:
    """The IceCube Kaggle data (META parquet, GEOMETRY csv, BATCH parquets) in the `icecube` pulse layout."""
    from expmatrix.data.icecube_kaggle import convert_kaggle

    try:
        shares = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        message = f"{fractions!r}: expected three numbers, e.g. 0.8,0.1,0.1"
        raise click.BadParameter(message, param_hint="--fractions") from None
    r = convert_kaggle(meta, geometry, list(batches), out, max_pulses, shares, seed)
    events = ", ".join(f"{k} {v}" for k, v in r["events"].items())
    click.echo(f"wrote {out}: {events} events; {r['truncated']} had more than {max_pulses} pulses (trimmed)")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _dataset_keys(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--keys y_train=Y_train` -> every dataset name; an unknown name is an error listing the valid ones."""
    from pydantic import ValidationError

    from expmatrix.config import KeysConfig, SpecError

    try:
        return KeysConfig.model_validate(dict(p.split("=", 1) for p in pairs if "=" in p)).model_dump()
    except ValidationError as e:
        bad = e.errors()[0]["loc"][0]
        raise SpecError(f"--keys: {bad}: unknown; valid: {', '.join(KeysConfig.model_fields)}") from None


VECT = click.option(
    "--vect", type=click.Choice(["4", "5"]), default="4", show_default=True, help="4: (pT, eta, phi); 5: adds E."
)
PRESETS_DIR = click.option(
    "--presets", default="tokenizers", show_default=True, type=click.Path(file_okay=False), help="Preset folder."
)
FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text", show_default=True)


@data.command("bin")
@click.option("--input", "source", required=True, type=click.Path(exists=True, dir_okay=False), help="Raw 4tops .h5.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="The binned .h5 to write.")
@click.option("--tokenizer", default="binned_ambre5", show_default=True, help="A joint binned preset name or .yaml.")
@PRESETS_DIR
@VECT
@click.option("--unit", type=click.Choice(["GeV", "MeV", "TeV"]), default="GeV", show_default=True)
@click.option("--background", default="2,3,4,5", show_default=True, help="Background process ids (for fit_on).")
@click.option("--keys", "keys", multiple=True, metavar="NAME=DATASET", help="Dataset names, e.g. y_train=Y_train.")
@click.option("--chunk-rows", type=int, default=1 << 15, show_default=True, help="Rows read at once (memory bound).")
@friendly
def data_bin(source, output, tokenizer, presets, vect, unit, background, keys, chunk_rows) -> None:
    """Write the binned data set (thesis layout: X_* as [N, 20] int64, labels, edges as attributes)."""
    from expmatrix.config import VECTORS, load_preset
    from expmatrix.tools.binfile import bin_file

    names = _dataset_keys(keys)
    config = load_preset(tokenizer, presets)
    report = bin_file(source, output, config, cont_features=VECTORS[vect], keys=names,
                      background=_ints(background), unit=unit, rows=chunk_rows)  # fmt: skip
    click.echo(f"wrote {output}: {report['rows']} rows, vocabulary {report['vocab_size']}")
    for split, counts in report["out_of_range"].items():
        outside = {f: n for f, n in counts.items() if n}
        if outside:
            click.echo(f"  {split}: entries outside the fitted range (put in the edge bins): {outside}")


@data.command("compare")
@click.argument("ours", type=click.Path(exists=True, dir_okay=False))
@click.argument("theirs", type=click.Path(exists=True, dir_okay=False))
@click.option("--their-keys", default=None, help="Their token datasets in row order, e.g. X (a combined split).")
@click.option("--our-splits", default=None, help="Our splits in row order, e.g. train,test [default: by row count].")
@click.option("--top", type=int, default=10, show_default=True, help="Rows of the frequency/disagreement tables.")
@FORMAT
@friendly
def data_compare(ours, theirs, their_keys, our_splits, top, fmt) -> None:
    """Token agreement of OURS (written by `data bin`) with THEIRS: overall, per position and feature."""
    from expmatrix.tools.compare import compare_files, render

    split = lambda text: text.split(",") if text else None  # noqa: E731
    comparison, tok = compare_files(ours, theirs, split(their_keys), split(our_splits))
    click.echo(render(comparison, tok, fmt, top))


@data.command("explore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train", show_default=True)
@click.option("--keys", "keys", multiple=True, metavar="NAME=DATASET", help="Dataset names, e.g. y_train=Y_train.")
@click.option("--max-events", type=int, default=100_000, show_default=True, help="Rows read (0: all).")
@click.option("--unit", type=click.Choice(["GeV", "MeV", "TeV"]), default="GeV", show_default=True)
@click.option("--plots", default=None, type=click.Path(file_okay=False), help="Folder for histogram PNGs.")
@click.option("--tokenizer", default=None, help="A preset name or .yaml: report the vocabulary it needs.")
@PRESETS_DIR
@VECT
@FORMAT
@friendly
def data_explore(file, split, keys, max_events, unit, plots, tokenizer, presets, vect, fmt) -> None:
    """Per-feature ranges, quantiles, invalid fractions, histograms of FILE; optionally a tokenizer's vocabulary."""
    from expmatrix.config import VECTORS, load_preset
    from expmatrix.tools.explore import explore, render

    names = _dataset_keys(keys)
    config = load_preset(tokenizer, presets) if tokenizer else None
    result = explore(file, names[f"x_{split}"], names[f"y_{split}"], unit=unit, max_events=max_events or None,
                     plots=plots, tokenizer=config, cont_features=VECTORS[vect], split=split)  # fmt: skip
    click.echo(render(result, fmt))


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option("--backend", type=click.Choice(["slurm", "condor"]), default=None, help="[default: the profile's]")
@click.option("--cluster", default=None, help="Cluster profile: hpc/profiles/NAME.yaml, or a path to one.")
@click.option("--hpc", "hpc_overrides", multiple=True, metavar="KEY=VALUE", help="Override a cluster setting.")
@click.option("--max-concurrent", type=int, default=None, help="Array tasks running at once.")
@click.option("--retry-failed", is_flag=True, help="Submit the failed jobs only.")
@click.option("--dry-run", is_flag=True, help="Write and print the files, submit nothing.")
@friendly
def submit(experiment, profile, overrides, runs_root, backend, cluster, hpc_overrides, max_concurrent, retry_failed,
           dry_run) -> None:
    """Submit the jobs of EXPERIMENT that are not done as SLURM or HTCondor arrays, then exit."""
    from expmatrix.executors.submit import report_line, submit_matrix

    cli_hpc = _parse_hpc(hpc_overrides, max_concurrent)
    prepared, submitted = submit_matrix(
        experiment, profile, overrides, runs_root, backend, cluster, cli_hpc, retry_failed, dry_run
    )
    click.echo(report_line(prepared, submitted, dry_run))


def _parse_hpc(items: tuple[str, ...], max_concurrent: int | None) -> dict:
    from expmatrix.config import parse_set

    out = parse_set(items)
    if max_concurrent is not None:
        out["max_concurrent"] = max_concurrent
    return out


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@RUNS
@click.option("--jobs", "jobs_file", required=True, type=click.Path(dir_okay=False), help="Job list of the array.")
@click.option("--task", type=int, default=None, help="[default: $EXPMATRIX_TASK or $SLURM_ARRAY_TASK_ID]")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads.")
@click.option("--stage", type=click.Choice(["fit", "train"]), default="train", show_default=True)
@friendly
def worker(experiment, runs_root, jobs_file, task, threads, stage) -> None:
    """Run one array task of a submitted EXPERIMENT: job N of the list, or the next one not started."""
    from expmatrix.config import load_experiment
    from expmatrix.executors.worker import run_task
    from expmatrix.states import EXIT_CODES
    from expmatrix.store import RunStore

    spec = load_experiment(experiment)
    store = RunStore(runs_root, spec.name, spec.run.stale_after_seconds)
    job_id, state = run_task(store, Path(jobs_file), task, threads, stage)
    click.echo(f"{stage} task {task if task is not None else '(env)'}: job {job_id}: {state}")
    if state == "failed":
        click.echo(store.status(job_id).get("error", "failed"), err=True)
    sys.exit(EXIT_CODES.get(state, 1))


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@friendly
def queue(experiment, profile, overrides, runs_root) -> None:
    """Jobs of a submitted EXPERIMENT as the run directories and the scheduler see them (one query)."""
    from expmatrix.executors.queue_status import reconcile
    from expmatrix.store import RunStore

    matrix = _matrix(experiment, profile, overrides)
    rows, counts = reconcile(RunStore(runs_root, matrix.spec.name), [j.id for j in matrix.jobs])
    click.echo(tabulate(rows, headers=["job", "on disk", "scheduler", "state"]))
    click.echo(", ".join(f"{n} {s}" for s, n in counts.most_common()))
