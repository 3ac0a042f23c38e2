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
@click.option("--metric", default=None, help="Metric to compare [default: the experiment's report.metric].")
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown"]), default="terminal", show_default=True)
@friendly
def report(experiment, profile, overrides, runs_root, metric, fmt) -> None:
    """Compare the cells of EXPERIMENT; also writes report.md and results.parquet beside the runs."""
    from expmatrix.report.collect import collect, orphans
    from expmatrix.report.tables import cell_table, paired_effect, render
    from expmatrix.spec import SpecError
    from expmatrix.store import RunStore, atomic_write

    matrix = _matrix(experiment, profile, overrides)
    store = RunStore(runs_root, matrix.spec.name)
    results = collect(matrix, store)
    metric = metric or matrix.spec.report.metric
    seeds = len({j.seed for j in matrix.jobs})
    table = cell_table(results, matrix.factor_names, metric, seeds, matrix.spec.report.higher_is_better)
    stray = orphans(matrix, store)
    if stray:
        table.warnings.append(f"{len(stray)} run directories belong to no job of this matrix (left out)")
    effects = []
    for factor, level in matrix.spec.report.baseline.items():
        if factor not in matrix.factor_names or level not in results[factor].to_list():
            raise SpecError(f"{experiment}: report.baseline.{factor}: no factor level {level!r}")
        effects.append(paired_effect(results, matrix.factor_names, metric, factor, level))
    store.dir.mkdir(parents=True, exist_ok=True)
    results.write_parquet(store.dir / "results.parquet")
    title = f"# {matrix.spec.name}" + (f" (profile {profile})" if profile else "")
    sections = [render(t, "markdown") for t in (table, *effects)]
    atomic_write(store.dir / "report.md", f"{title}\n\n" + "\n\n".join(sections) + "\n")
    click.echo("\n\n".join(render(t, fmt) for t in (table, *effects)))
    click.echo(f"\nwritten: {store.dir / 'report.md'}, {store.dir / 'results.parquet'}")


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


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _dataset_keys(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--keys y_train=Y_train` -> every dataset name; an unknown name is an error listing the valid ones."""
    from pydantic import ValidationError

    from expmatrix.spec import KeysConfig, SpecError

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
VECT_FEATURES = {"4": [1, 2, 3], "5": [0, 1, 2, 3]}


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
    from expmatrix.data.binfile import bin_file
    from expmatrix.tokenizers import load_preset

    names = _dataset_keys(keys)
    config = load_preset(tokenizer, presets)
    report = bin_file(source, output, config, cont_features=VECT_FEATURES[vect], keys=names,
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
    from expmatrix.data.compare import compare_files, render

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
    from expmatrix.data.explore import explore, render
    from expmatrix.tokenizers import load_preset

    names = _dataset_keys(keys)
    config = load_preset(tokenizer, presets) if tokenizer else None
    result = explore(file, names[f"x_{split}"], names[f"y_{split}"], unit=unit, max_events=max_events or None,
                     plots=plots, tokenizer=config, cont_features=VECT_FEATURES[vect])  # fmt: skip
    click.echo(render(result, fmt))
