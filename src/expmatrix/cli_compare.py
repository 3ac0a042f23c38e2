"""`expmatrix compare A B`: two runs side by side."""

from __future__ import annotations

import click

from expmatrix.cli_common import RUNS, friendly


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@RUNS
@click.option("--metric", default=None, help="Metric compared [default: A's report.metric, else test.auroc].")
@click.option("--format", "fmt", type=click.Choice(["terminal", "markdown", "latex", "html"]), default="terminal",
              show_default=True, help="What is printed; every format is written to --out.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write the tables and files here.")
@click.option("--wide", is_flag=True, help="Print tables and warnings whole (by default every line fits 100 columns).")
@friendly
def compare(run_a, run_b, runs_root, metric, fmt, out, wide) -> None:
    """Compare RUN_B against RUN_A: per common cell and per factor level, Δ = B - A with its interval (paired by
    seed where seeds match) and P(B better). Each run is EXPERIMENT.yaml, EXPERIMENT.yaml@PROFILE (its runs
    under --runs) or a run directory (runs/<experiment>). Cells and seeds of one run only are listed."""
    from expmatrix.report.two_runs import compare_and_write, load_run

    a, b = load_run(run_a, runs_root), load_run(run_b, runs_root)
    click.echo(compare_and_write(a, b, metric, out, fmt, wide))
    if out:
        click.echo(f"written to {out}")
