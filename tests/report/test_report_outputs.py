"""A real tiny matrix, reported in every format: files, plots, LaTeX that compiles, HTML that a browser opens."""

from __future__ import annotations

import re
import shutil
import subprocess

import page_probe
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import write_experiment

from expmatrix.cli import main

pytestmark = pytest.mark.slow  # trains, or starts processes

FACTORS = {
    "tokenizer": ["direct", "binned_ambre5"],
    "met": {"with": {"data.use_met": True}, "without": {"data.use_met": False}},
}
TINY_DATA = {"path": "synthetic", "synthetic": {"events": 1500, "seed": 1}}
TINY_BASE = {
    "model": {"target_params": 8000, "layers": 1, "heads": 2},
    "train": {"epochs": 1, "batch_size": 256, "warmup_steps": 2, "lr": 1e-3},
}
REPORT = {"baseline": {"tokenizer": "direct"}, "top_k": 2}
TABLES = ["cells", "effects", "interaction_tokenizer__met", "anova", "marginal_means", "seeds", "ranking"]
PLOTS = ["effects", "heatmap_tokenizer__met", "roc_cells", "roc_tokenizer", "roc_met", "learning_curves"]


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def reported(tmp_path_factory, one_thread):
    """2 tokenizers x 2 MET levels x 1 seed, trained for real, reported to `out` (LaTeX printed). One worker, in
    this process: a pool's workers would each import torch, and the pool is the runner tests' business."""
    tmp = tmp_path_factory.mktemp("report")
    exp = write_experiment(tmp, factors=FACTORS, data=TINY_DATA, base=TINY_BASE, report=REPORT)
    cli("run", str(exp), "--runs", str(tmp / "runs"), "--workers", "1", "--threads", "1")
    printed = cli("report", str(exp), "--runs", str(tmp / "runs"), "--out", str(tmp / "out"), "--format", "latex")
    return tmp, exp, printed


def test_every_file_is_written(reported):
    tmp, _, printed = reported
    out = tmp / "out"
    for name in ["report.md", "report.tex", "report.html", "results.parquet", "summary.csv", "best_models.csv"]:
        assert (out / name).stat().st_size > 0, name
    for name in TABLES:
        assert (out / "tables" / f"{name}.tex").exists()
    assert {p.name for p in (out / "plots").iterdir()} == {f"{p}.{ext}" for p in PLOTS for ext in ("png", "pdf")}
    assert (out / "report.tex").read_text() in printed  # --format latex prints the document
    results = pl.read_parquet(out / "results.parquet")
    best = pl.read_csv(out / "best_models.csv")
    assert best["rank"].to_list() == [1, 2, 3, 4]
    assert best["test.auroc mean"][0] == pytest.approx(results["test.auroc"].max())  # one seed: the job is the cell
    assert best["run_dir"][0].endswith(best["best_job"][0])
    effects = pl.read_csv(out / "tables" / "effects.csv")
    direct, binned = effects.filter(pl.col("factor") == "tokenizer").rows(named=True)
    auroc = dict(zip(zip(results["tokenizer"], results["met"], strict=True), results["test.auroc"], strict=True))
    diffs = [auroc["binned_ambre5", m] - auroc["direct", m] for m in ("with", "without")]
    assert binned["delta"] == pytest.approx(sum(diffs) / 2) and binned["pairs"] == 2


def test_latex_is_escaped_and_compiles(reported, tmp_path):
    tex = (reported[0] / "out" / "report.tex").read_text()
    assert tex.isascii() and "model\\_" not in tex  # no raw Unicode; factor names are escaped
    assert "binned\\_ambre5" in tex and "$\\pm$" in tex and "$\\Delta$" in tex
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == len(TABLES)
    assert tex.count("\\toprule") == tex.count("\\midrule") == tex.count("\\bottomrule") == len(TABLES)
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
    (tmp_path / "report.tex").write_text(tex)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1000
    assert "Overfull" not in run.stdout


def test_the_interactive_page_opens_offline_sorts_filters_and_draws_a_cell(reported, tmp_path):
    page = reported[0] / "out" / "report.html"
    html = page.read_text()
    assert re.search(r'<(script|link)[^>]+(src|href)="https?:', html) is None  # no CDN: Bokeh's JS is inlined
    assert "Bokeh" in html and page.stat().st_size < 5_000_000
    if page_probe.browser() is None:
        pytest.skip("no headless Chromium (apt-get install chromium)")
    seen = page_probe.probe_page(page, tmp_path, "test.auroc mean", ("tokenizer", "direct"))
    assert seen["errors"] == [] and "failed" not in seen
    auroc = [float(r[2]) for r in seen["before"]]  # columns: tokenizer, met, test.auroc mean, ...
    assert auroc == sorted(auroc, reverse=True) and len(auroc) == 4  # best first, as the cells table
    assert [float(r[2]) for r in seen["sorted"]] == sorted(auroc)  # one click on the header: ascending
    assert [r[0] for r in seen["filtered"]] == ["direct", "direct"] and seen["filtered_keys"] == 2
    chosen = seen["filtered"][0]  # the row clicked: its cell's curves, one line per seed (1 here)
    assert f"{chosen[0]} | {chosen[1]} (seeds 0)" in seen["label"]
    assert (seen["curve_lines"], seen["learning_lines"], seen["health_lines"]) == (1, 1, 0)  # no VQ: no codebook
    shot = page_probe.screenshot(page, tmp_path, tmp_path / "shot.png")
    assert shot.stat().st_size > 10_000


def test_the_terminal_report_fits_100_columns_unless_wide(reported):
    tmp, exp, _ = reported
    args = ["report", str(exp), "--runs", str(tmp / "runs"), "--out", str(tmp / "terminal"), "--no-plots"]
    narrow, wide = cli(*args), cli(*args, "--wide")
    assert narrow.startswith("Verdict\n- test.auroc, higher is better")
    assert max(len(line) for line in narrow.splitlines()) <= 100
    assert max(len(line) for line in wide.splitlines()) > 100


def test_compare_a_run_with_itself_by_experiment_and_by_directory(reported):
    tmp, exp, _ = reported
    out = cli("compare", str(exp), str(tmp / "runs" / "tiny"), "--runs", str(tmp / "runs"), "--out", str(tmp / "cmp"))
    assert "over 4 common cells, 4 seed pairs: Δ +0.0000" in " ".join(out.split())
    cells = pl.read_csv(tmp / "cmp" / "tables" / "compare_cells.csv")
    assert cells.height == 4 and cells["delta"].abs().max() == 0.0
    result = CliRunner().invoke(main, ["compare", str(exp), str(tmp / "nowhere"), "--runs", str(tmp / "runs")])
    assert result.exit_code == 1 and "neither a run directory nor an experiment file" in result.output


def test_partial_results_are_reported_with_what_is_missing(reported):
    tmp, exp, _ = reported
    more_seeds = write_experiment(tmp / "runs", factors=FACTORS, data=TINY_DATA, base=TINY_BASE, seeds=[0, 1])
    out = cli("report", str(more_seeds), "--runs", str(tmp / "runs"), "--out", str(tmp / "partial"), "--no-plots")
    assert "warning: partial results: 4 of 8 jobs done; left out: 4 new" in out
    assert "warning: cell tokenizer=direct, met=with: 1 of 2 seeds finished (missing: 1)" in out
    assert not (tmp / "partial" / "plots").exists()
    effects = pl.read_csv(tmp / "partial" / "tables" / "effects.csv")
    assert effects.filter(pl.col("level") == "binned_ambre5")["pairs_expected"].to_list() == [4]


def test_unknown_metric_names_the_available_ones(reported):
    tmp, exp, _ = reported
    result = CliRunner().invoke(main, ["report", str(exp), "--runs", str(tmp / "runs"), "--metric", "test.aroc"])
    assert result.exit_code == 1
    assert (
        "report.metrics: no finished job has test.aroc; available:" in result.output and "test.auroc" in result.output
    )


def test_a_single_cell_is_reported_without_comparisons(tmp_path, one_thread):
    exp = write_experiment(
        tmp_path, factors={}, seeds=[0, 1], data=TINY_DATA, base={**TINY_BASE, "tokenizer": "direct"}
    )
    cli("run", str(exp), "--runs", str(tmp_path / "runs"), "--workers", "1", "--threads", "1")
    out = cli("report", str(exp), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-plots")
    assert "Cells: mean ± std over seeds" in out and "Top 1 cells" in out
    assert "Factor effects" not in out and "ANOVA" not in out and "How many seeds" not in out
