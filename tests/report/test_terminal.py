"""The terminal report of a flagship-shaped matrix (3 poolings x 3 tokenizers x 2 MET x 2 vect x 3 seeds, made up
with known effects): the verdict comes first and says them; every line fits 100 columns unless asked wide."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from expmatrix.config import ReportConfig
from expmatrix.report import tables
from expmatrix.report.build import compare
from expmatrix.report.document import Report
from expmatrix.report.effects import cell_stats
from expmatrix.report.formats.text import column_parts, render_terminal
from expmatrix.report.settings import ReportSettings
from expmatrix.report.verdict import verdict

LEVELS = {
    "model.pooling": ["cls", "mean", "max"],
    "tokenizer": ["direct", "binned_ambre5", "vqvae512"],
    "met": ["with", "without"],
    "vect": ["4", "5"],
}
FACTORS = list(LEVELS)


def flagship(noise: float = 0.005) -> pl.DataFrame:
    """AUROC 0.85 for direct; vqvae512 0.063 lower; binned 0.19 lower at vect 4 and 0.24 at vect 5."""
    rng = np.random.default_rng(0)
    metrics = ReportConfig().metrics
    rows = []
    for i, (pool, tok, met, vect) in enumerate(itertools.product(*LEVELS.values())):
        deficit = {"direct": 0.0, "binned_ambre5": 0.19 + 0.05 * (vect == "5"), "vqvae512": 0.063}[tok]
        for seed in range(3):
            auroc = 0.85 - deficit + rng.normal(0, noise)
            row = {"job": f"j{i}-{seed}", "model.pooling": pool, "tokenizer": tok, "met": met, "vect": vect}
            row |= {"seed": seed, "state": "done", "params": 50_000, "train_seconds": 12.0}
            rows.append(row | {m: auroc * (1 + 0.1 * k) for k, m in enumerate(metrics)})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def report() -> Report:
    results = flagship()
    s = ReportSettings.resolve(ReportConfig(baseline={"tokenizer": "direct"}))
    compared, frames, effects, inters = compare(results, FACTORS, FACTORS, s)
    stats = cell_stats(results, FACTORS, s.metrics, s.metric, True)
    said = verdict(effects, inters, frames["anova"], s.metric, True, s.confidence)
    warning = "failed job j0-1 (model.pooling=cls, tokenizer=direct, met=with, vect=4, seed 1): " + "x" * 150
    return Report("flagship", [warning], [tables.cells_table(stats, FACTORS, s.metrics, {}), *compared], frames,
                  verdict=said)  # fmt: skip


def test_every_terminal_line_fits_100_columns_and_wide_restores_the_whole_tables(report):
    text = render_terminal(report)
    assert max(len(line) for line in text.splitlines()) <= 100
    wide = render_terminal(report, None)
    assert max(len(line) for line in wide.splitlines()) > 200  # the cells table with its 5 metrics, whole
    # nothing lost in the split: every cell of every table is printed somewhere
    for t in report.tables:
        for row in t.rows:
            assert all(cell in text for cell in row if len(cell) < 60), (t.name, row)


def test_the_first_screen_states_the_verdict_with_numbers(report):
    screen = "\n".join(render_terminal(report).splitlines()[:40])
    assert screen.startswith("Verdict")
    flat = " ".join(screen.split())
    assert "tokenizer: direct best" in flat and "every other level resolved below direct" in flat
    # the known deficits, with intervals that hold them
    tok = report.frames["effects"].filter(pl.col("factor") == "tokenizer").rows_by_key("level", named=True)
    for level, deficit in (("vqvae512", -0.063), ("binned_ambre5", -0.215)):
        r = tok[level][0]
        assert r["ci_low"] < deficit < r["ci_high"]
        assert f"{level} {r['delta']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] p adj <0.001" in flat
    assert "model.pooling: " in flat and "no level resolved from cls" in flat  # pooling does nothing here
    # the one interaction built in, and only it
    assert flat.count("Interaction:") == 1
    inter = report.frames["interaction_tokenizer__vect"]
    binned = inter.filter(pl.col("level") == "binned_ambre5").rows_by_key("by_level", named=True)
    at4, at5 = binned["4"][0]["delta"], binned["5"][0]["delta"]
    assert at4 == pytest.approx(-0.19, abs=0.01) and at5 == pytest.approx(-0.24, abs=0.01)
    assert f"tokenizer × vect (p adj <0.001): Δ binned_ambre5 vs direct of tokenizer is {at4:+.4f} at vect=4," in flat


def test_columns_are_split_in_order_with_the_row_names_kept():
    keys, parts = column_parts([10, 10, 30, 30, 30, 5], keys=2, width=90)
    assert keys == 2 and parts == [[2, 3], [4, 5]]  # 24 for the names and gaps; 30 + 2 + 30 fit in the other 66
    assert column_parts([10, 10, 30, 30, 30, 5], keys=2, width=85)[1] == [[2], [3], [4, 5]]  # 62 > 61
    keys, parts = column_parts([30, 30, 20], keys=2, width=60)
    assert keys == 1 and parts == [[1], [2]]  # names may not take more than half the line
    keys, parts = column_parts([10, 200], keys=1, width=100)
    assert parts == [[1]]  # a column wider than the line gets a part of its own (and is cut to fit)
