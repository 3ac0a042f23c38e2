"""`compare A B` on hand-made runs: paired Δ where seeds match, Welch where they do not, cells and seeds of
one run listed, runs that cannot be compared refused with the run named."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from expmatrix.config import SpecError
from expmatrix.report.formats.text import render_terminal
from expmatrix.report.stats import StatsSettings
from expmatrix.report.two_runs import Run, compare_runs

FACTORS = ["tokenizer", "met"]
CELLS = [("direct", "with"), ("direct", "without"), ("binned", "with")]


def run(name: str, shift: float, seeds=(0, 1, 2), cells=CELLS, metric="test.auroc") -> Run:
    """AUROC 0.80 + shift + a per-seed wobble that both runs share (so the pairs cancel it)."""
    rows = [
        {"job": f"{name}{t}{m}{s}", "tokenizer": t, "met": m, "seed": s, "state": "done"}
        | {metric: 0.80 + shift + 0.01 * s + 0.001 * i * (name == "B") * s}
        for i, (t, m) in enumerate(cells)
        for s in seeds
    ]
    return Run(name, pl.DataFrame(rows), FACTORS)


def test_matched_seeds_are_paired_per_cell_and_pooled_per_level():
    report = compare_runs(run("A", 0.0), run("B", 0.02), "test.auroc", StatsSettings(), higher=True)
    cells = report.frames["compare_cells"].rows_by_key(FACTORS, named=True, unique=True)
    first = cells["direct", "with"]  # i = 0: B - A = 0.02 exactly for every seed
    assert first["paired"] and first["pairs"] == 3 and first["delta"] == pytest.approx(0.02)
    third = cells["binned", "with"]  # i = 2: differences 0.02, 0.022, 0.024
    d = np.array([0.02, 0.022, 0.024])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert (third["ci_low"], third["ci_high"]) == (pytest.approx(0.022 - half), pytest.approx(0.022 + half))
    assert third["p_better"] == 1.0 and third["p_better_low"] == pytest.approx(0.025 ** (1 / 3))
    levels = report.frames["compare_levels"]
    overall = levels.row(0, named=True)
    assert (overall["factor"], overall["cells"], overall["pairs"]) == ("all", 3, 9)
    assert overall["delta"] == pytest.approx((0.06 + 0.063 + 0.066) / 9)  # cells i = 0, 1, 2: + 0.001 i s
    binned = levels.filter(pl.col("level") == "binned").row(0, named=True)
    assert binned["pairs"] == 3 and binned["delta"] == pytest.approx(0.022)
    assert report.warnings == []  # nothing left out
    assert "over 3 common cells, 9 seed pairs: Δ +0.0210" in " ".join(report.verdict)


def test_cells_of_one_run_only_are_listed_not_compared():
    b = run("B", 0.01, cells=CELLS[:2] + [("vqvae", "with")])
    report = compare_runs(run("A", 0.0), b, "test.auroc", StatsSettings(), higher=True)
    assert report.frames["compare_cells"].height == 2
    only = ["cell only in A: tokenizer=binned, met=with", "cell only in B: tokenizer=vqvae, met=with"]
    assert report.warnings == only
    text = render_terminal(report)
    assert "cell only in B: tokenizer=vqvae, met=with" in text and max(map(len, text.splitlines())) <= 100


def test_unmatched_seeds_fall_back_to_welch_and_partly_matched_ones_are_said():
    report = compare_runs(run("A", 0.0), run("B", 0.02, seeds=(3, 4, 5)), "test.auroc", StatsSettings(), True)
    cell = report.frames["compare_cells"].rows_by_key(FACTORS, named=True, unique=True)["direct", "with"]
    a, b = 0.80 + 0.01 * np.arange(3), 0.82 + 0.01 * np.arange(3, 6)
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert not cell["paired"] and cell["delta"] == pytest.approx(0.05)
    assert (cell["ci_low"], cell["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert cell["p_better"] is None  # a probability over pairs needs pairs
    assert report.frames["compare_levels"].row(0, named=True)["pairs"] == 0
    assert "unpaired" in render_terminal(report)
    partly = compare_runs(run("A", 0.0), run("B", 0.02, seeds=(0, 1, 3)), "test.auroc", StatsSettings(), True)
    cell = partly.frames["compare_cells"].rows_by_key(FACTORS, named=True, unique=True)["direct", "with"]
    assert cell["paired"] and cell["pairs"] == 2 and cell["delta"] == pytest.approx(0.02)
    assert "cell tokenizer=direct, met=with: seeds 2, 3 in one run only (left out of its pairs)" in partly.warnings


def test_runs_with_different_metrics_or_factors_are_refused_with_the_run_named():
    other = run("B", 0.0, metric="test.angular_error_median")
    with pytest.raises(SpecError, match=r"^B: no finished job has test.auroc; it has: test.angular_error_median$"):
        compare_runs(run("A", 0.0), other, "test.auroc", StatsSettings(), True)
    fewer = Run("B", run("B", 0.0).results.drop("met"), ["tokenizer"])
    with pytest.raises(SpecError, match=r"different factors \(A: met\)"):
        compare_runs(run("A", 0.0), fewer, "test.auroc", StatsSettings(), True)
    disjoint = run("B", 0.0, cells=[("vqvae", "with")])
    with pytest.raises(SpecError, match="A and B have no finished cell in common"):
        compare_runs(run("A", 0.0), disjoint, "test.auroc", StatsSettings(), True)
