"""expmatrix command line: parse, call the library, print."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click
from tabulate import tabulate

from expmatrix.data.layout import CONT_NAMES

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
        from expmatrix.data import DataError
        from expmatrix.models.sizing import BudgetError
        from expmatrix.spec import SpecError
        from expmatrix.tokenizers import TokenizerError

        try:
            return fn(*args, **kwargs)
        except (SpecError, DataError, TokenizerError, BudgetError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def _matrix(experiment: str, profile: str | None, overrides: tuple[str, ...]):
    from expmatrix.matrix import build_matrix, parse_set

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
    from expmatrix.models.sizing import solve_size
    from expmatrix.spec import JobConfig
    from expmatrix.store import RunStore
    from expmatrix.tokenizers import build_tokenizer

    matrix = _matrix(experiment, profile, overrides)
    store = RunStore(runs_root, matrix.spec.name)
    rows = []
    for job in matrix.jobs:
        cfg = JobConfig.model_validate(job.config)
        features = tuple(CONT_NAMES[i] for i in cfg.data.cont_features)
        size = solve_size(build_tokenizer(cfg.tokenizer, features, cfg.data.use_met), cfg.model, 2)
        rows.append([job.id, *job.levels.values(), job.seed, size.params, size.d_model, store.state(job.id)])
    click.echo(tabulate(rows, headers=["job", *matrix.factor_names, "seed", "params", "width", "state"]))
    click.echo(f"{len(matrix.jobs)} jobs in {len(matrix.cells)} cells")


@main.command()
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@PROFILE
@SET
@RUNS
@click.option(
    "--workers", type=int, default=lambda: os.cpu_count() or 1, show_default="CPU count", help="Jobs trained at once."
)
@click.option("--threads", type=int, default=None, help="Torch threads per job [default: CPUs / workers].")
@click.option("--retry-failed/--skip-failed", default=True, show_default=True, help="Run failed jobs again.")
@friendly
def run(experiment, profile, overrides, runs_root, workers, threads, retry_failed) -> None:
    """Train every job of EXPERIMENT that is not done yet, in a local process pool."""
    from expmatrix.executors.local import run_local
    from expmatrix.store import RunStore

    matrix = _matrix(experiment, profile, overrides)
    store = RunStore(runs_root, matrix.spec.name)
    states = run_local(matrix, store, workers, threads, retry_failed)
    if not any(v for k, v in states.items() if k != "skipped (done)"):
        click.echo(f"all {len(matrix.jobs)} jobs already done: nothing to train ({store.dir})")
        return
    click.echo(", ".join(f"{v} {k}" for k, v in states.items() if v) + f"  ({store.dir})")
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
    """Run one job from its JOB_FILE (runs/<experiment>/<id>/job.yaml), outside any matrix."""
    import yaml

    from expmatrix.matrix import Job
    from expmatrix.store import RunStore
    from expmatrix.training.job import run_job

    path = Path(job_file).resolve()
    job = Job.from_record(yaml.safe_load(path.read_text()))
    store = RunStore(path.parent.parent.parent, path.parent.parent.name)
    state = run_job(job, store, threads or os.cpu_count() or 1)
    click.echo(f"job {job.id}: {state}")
    if state == "failed":
        raise click.ClickException(store.status(job.id).get("error", "failed"))


@main.group()
def data() -> None:
    """Data tools."""


@data.command("synth")
@click.argument("source", type=click.Choice(["fourtops"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .h5 file to write.")
@click.option("--events", type=int, default=100_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def synth(source: str, out: str, events: int, seed: int) -> None:
    """Write a synthetic data set in the exact layout of SOURCE (fourtops: 4tops_splitted.h5)."""
    from expmatrix.data.synthetic import write_fourtops

    click.echo(f"wrote {write_fourtops(out, events, seed)} ({events} events, seed {seed})")
