"""Report numbers on a hand-made results frame whose answers are worked out by hand."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import write_experiment

from expmatrix.config import ReportConfig, SpecError
from expmatrix.matrix import build_matrix
from expmatrix.report.collect import collect
from expmatrix.report.coverage import coverage
from expmatrix.report.effects import cell_stats, factor_effects, interaction
from expmatrix.report.settings import ReportSettings, parse_flags
from expmatrix.report.stats import StatsSettings, bootstrap_ci, paired_stats
from expmatrix.report.tables import cells_table, effects_table, interaction_table
from expmatrix.store import RunStore

FACTORS = ["tokenizer", "pooling"]
AUROC = {  # (tokenizer, pooling) -> AUROC of seed 0, seed 1 (None: that job failed)
    ("direct", "cls"): [0.80, 0.82],
    ("binned", "cls"): [0.75, 0.79],
    ("direct", "max"): [0.70, 0.72],
    ("binned", "max"): [None, 0.70],
}
SETTINGS = StatsSettings(0.95, 10_000, 0)  # Student t
PERCENTILE = StatsSettings(0.95, 10_000, 0, "percentile", min_pairs=2)
T_975_2DOF = 4.302652729749462  # the 97.5% quantile of Student's t with 2 degrees of freedom


def results() -> pl.DataFrame:
    rows = []
    for (tok, pool), values in AUROC.items():
        for seed, v in enumerate(values):
            row = {"job": f"{tok}-{pool}-{seed}", "tokenizer": tok, "pooling": pool, "seed": seed}
            if v is None:
                row |= {"state": "failed", "error": "boom"}
            else:
                row |= {"state": "done", "test.auroc": v, "test.brier": 1 - v, "params": 1000, "train_seconds": 2.0}
            rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def test_paired_effect_marginals_ci_and_p_values():
    eff = factor_effects(results(), FACTORS, "test.auroc", "tokenizer", "direct", SETTINGS)
    direct, binned = eff.rows(named=True)
    # marginals: mean of cell means; binned = (0.77 + 0.70) / 2, direct = (0.81 + 0.71) / 2
    assert direct["marginal"] == pytest.approx(0.76) and direct["is_baseline"] and direct["cells"] == 2
    assert binned["marginal"] == pytest.approx(0.735)
    # matched pairs (same pooling, same seed): cls/0 -0.05, cls/1 -0.03, max/1 -0.02; max/0 failed
    assert (binned["pairs"], binned["pairs_expected"]) == (3, 4)
    assert binned["delta"] == pytest.approx(-0.1 / 3)
    assert binned["delta_std"] == pytest.approx(math.sqrt(((1 / 60) ** 2 + (1 / 300) ** 2 + (1 / 75) ** 2) / 2))
    half = T_975_2DOF * binned["delta_std"] / math.sqrt(3)
    assert (binned["ci_low"], binned["ci_high"]) == (pytest.approx(-0.1 / 3 - half), pytest.approx(-0.1 / 3 + half))
    assert binned["p_wilcoxon"] == pytest.approx(0.25)  # exact: all 3 signs negative, 2 * (1/2)**3
    t = binned["delta"] / (binned["delta_std"] / math.sqrt(3))
    assert binned["p_ttest"] == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2))  # t distribution, 2 dof
    assert binned["p"] == binned["p_ttest"]  # the test that agrees with the t interval
    # the percentile bootstrap (allowed at 3 pairs here): each extreme resample (all -0.05 / all -0.02) has
    # probability 1/27 > 2.5%, so the interval is the range; its p is Wilcoxon's
    pct = factor_effects(results(), FACTORS, "test.auroc", "tokenizer", "direct", PERCENTILE).row(1, named=True)
    assert (pct["ci_low"], pct["ci_high"]) == (pytest.approx(-0.05), pytest.approx(-0.02))
    assert pct["p"] == pct["p_wilcoxon"]
    default_pct = StatsSettings(interval="percentile")  # its own minimum: 20 pairs
    assert factor_effects(results(), FACTORS, "test.auroc", "tokenizer", "direct", default_pct)["ci_low"][1] is None


def test_interaction_splits_the_effect_by_the_other_factor():
    inter = interaction(results(), FACTORS, "test.auroc", "tokenizer", "direct", "pooling", SETTINGS)
    binned = inter.filter(pl.col("level") == "binned").rows_by_key("by_level", named=True, unique=True)
    assert binned["cls"]["delta"] == pytest.approx(-0.04) and binned["cls"]["pairs"] == 2
    # two pairs (-0.05, -0.03): t with 1 dof, half-width 12.706 * 0.01414 / sqrt(2) = 0.1271, t = -4
    assert (binned["cls"]["ci_low"], binned["cls"]["ci_high"]) == (
        pytest.approx(-0.167062, abs=1e-6),
        pytest.approx(0.087062, abs=1e-6),
    )
    assert binned["max"]["delta"] == pytest.approx(-0.02) and binned["max"]["pairs_expected"] == 2
    assert binned["max"]["ci_low"] is None and binned["max"]["p"] is None  # one pair: no interval, no test
    table = interaction_table(inter, "test.auroc", [])
    assert table.headers == [
        "pooling", "tokenizer=direct", "tokenizer=binned", "Δ binned vs direct [CI]", "p", "P(better)", "pairs"
    ]  # fmt: skip
    # P(better): binned loses both cls pairs, 0 of 2: Clopper-Pearson [0, 1 - 0.025^(1/2)]; 0 of 1: [0, 0.975]
    assert table.rows == [
        ["cls", "0.8100", "0.7700", "-0.0400 [-0.1671, +0.0871]", "0.156", "0.00 [0.00, 0.84]", "2/2"],
        ["max", "0.7100", "0.7000", "-0.0200 (too few pairs for an interval)", "n/a", "0.00 [0.00, 0.97]", "1/2"],
    ]


def test_two_pairs_p_values():
    s = paired_stats(np.array([-0.05, -0.03]))
    assert s.p_wilcoxon == pytest.approx(0.5)  # the smallest possible with 2 pairs
    assert s.p_ttest == pytest.approx(1 - 2 / math.pi * math.atan(4))  # t = -4 with 1 dof (Cauchy)
    assert s.p == s.p_ttest and s.ci_low < 0 < s.ci_high  # the t interval agrees with p > 0.05


def test_bootstrap_interval_is_seeded_and_close_to_the_normal_one():
    d = np.random.default_rng(7).normal(0.02, 0.01, size=200)
    low, high = bootstrap_ci(d, 0.95, 10_000, seed=0)
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert low == pytest.approx(d.mean() - half, abs=1.5e-4) and high == pytest.approx(d.mean() + half, abs=1.5e-4)
    assert bootstrap_ci(d, 0.95, 10_000, seed=0) == (low, high)
    assert bootstrap_ci(d, 0.95, 10_000, seed=1) != (low, high)


def test_no_difference_is_p_one():
    s = paired_stats(np.zeros(5))
    assert (s.mean, s.p, s.p_wilcoxon, s.p_ttest, s.ci_low, s.ci_high) == (0.0, 1.0, 1.0, 1.0, 0.0, 0.0)


def test_cell_table_bolds_the_best_of_each_metric_in_its_direction():
    stats = cell_stats(results(), FACTORS, ["test.auroc", "test.brier"], "test.auroc", True)
    table = cells_table(stats, FACTORS, ["test.auroc", "test.brier"], {})
    assert [r[:4] for r in table.rows] == [
        ["direct", "cls", "0.8100 ± 0.0141", "0.1900 ± 0.0141"],
        ["binned", "cls", "0.7700 ± 0.0283", "0.2300 ± 0.0283"],
        ["direct", "max", "0.7100 ± 0.0141", "0.2900 ± 0.0141"],
        ["binned", "max", "0.7000", "0.3000"],  # one seed: no spread
    ]
    assert table.bold == {(0, 2), (0, 3)}  # highest AUROC, lowest Brier: both the first row
    assert stats["best_job"].to_list() == ["direct-cls-1", "binned-cls-1", "direct-max-1", "binned-max-1"]


def test_cell_table_shows_the_codebook_health_of_vq_cells_beside_the_metric():
    health = {  # the binned cells as VQ cells: each job's codebook summary, as its metrics.json has it
        "binned-cls-0": {"utilisation": 0.5, "perplexity": 100.0, "dead_codes": 256, "pT_rmse": 2.0, "eta_rmse": 0.02},
        "binned-cls-1": {"utilisation": 0.7, "perplexity": 140.0, "dead_codes": 154, "pT_rmse": 4.0, "eta_rmse": 0.04},
        "binned-max-0": {"utilisation": 0.1, "perplexity": 9.0, "dead_codes": 460, "pT_rmse": 9.0, "eta_rmse": 0.09},
        "binned-max-1": {"utilisation": 0.9, "perplexity": 300.0, "dead_codes": 51, "pT_rmse": 1.234, "eta_rmse": 0.01},
    }  # fmt: skip
    jobs = results()["job"].to_list()
    frame = results().with_columns(
        pl.Series(f"codebook.{k}", [health[j][k] if j in health else None for j in jobs]) for k in health[jobs[2]]
    )
    stats = cell_stats(frame, FACTORS, ["test.auroc"], "test.auroc", True)
    table = cells_table(stats, FACTORS, ["test.auroc"], {})
    assert table.headers[:8] == ["tokenizer", "pooling", "test.auroc (mean ± std)", "codes used", "perplexity",
                                 "rmse eta", "rmse pT", "n"]  # fmt: skip
    rows = {tuple(r[:2]): r[3:7] for r in table.rows}
    assert rows[("binned", "cls")] == ["60%", "120.0", "0.03", "3"]  # means over the cell's two jobs
    assert rows[("binned", "max")] == ["90%", "300.0", "0.01", "1.23"]  # seed 0 failed: seed 1's alone
    assert rows[("direct", "cls")] == rows[("direct", "max")] == ["-"] * 4  # no codebook
    assert any("share of codes used" in note for note in table.notes)
    metrics = ["test.auroc", "codebook.perplexity"]  # a report.metrics column is not shown twice
    chosen = cells_table(cell_stats(frame, FACTORS, metrics, "test.auroc", True), FACTORS, metrics, {})
    assert chosen.headers[2:6] == ["test.auroc (mean ± std)", "codebook.perplexity", "codes used", "rmse eta"]
    plain = cells_table(cell_stats(results(), FACTORS, ["test.auroc"], "test.auroc", True), FACTORS, ["test.auroc"], {})
    assert "codes used" not in plain.headers and not any("codebook" in note.lower() for note in plain.notes)


def test_effects_table_rows_and_incomplete_marginals_are_not_bold():
    eff = factor_effects(results(), FACTORS, "test.auroc", "tokenizer", "direct", SETTINGS)
    table = effects_table(eff, "test.auroc", True, [])
    assert table.rows == [
        ["tokenizer", "direct", "0.7600", "2/2", "(baseline)", "", "", "4/4"],
        ["tokenizer", "binned", "0.7350", "2/2", "-0.0333 [-0.0713, +0.0046]", "0.063", "0.00 [0.00, 0.71]", "3/4"],
    ]
    assert table.bold == {(0, 2)}
    dropped = results().filter(pl.col("job") != "binned-max-1")  # binned/max now has no finished job
    eff = factor_effects(dropped, FACTORS, "test.auroc", "tokenizer", "direct", SETTINGS)
    table = effects_table(eff, "test.auroc", True, [])
    assert table.rows[1][2:4] == ["0.7700", "1/2"] and table.bold == set()


def test_coverage_names_what_is_left_out():
    frame = results().with_columns(
        pl.when(pl.col("job") == "direct-max-0").then(pl.lit("running")).otherwise(pl.col("state")).alias("state")
    )
    assert coverage(frame, FACTORS, ["test.auroc"]) == [
        "partial results: 6 of 8 jobs done; left out: 1 failed, 1 running",
        "failed job binned-max-0 (tokenizer=binned, pooling=max, seed 0): boom",
        "cell tokenizer=direct, pooling=max: 1 of 2 seeds finished (missing: 0)",
        "cell tokenizer=binned, pooling=max: 1 of 2 seeds finished (missing: 0)",
    ]


def test_undefined_working_points_are_counted():
    frame = results().with_columns(pl.lit(None, pl.Float64).alias("test.sig_eff_at_bkg_rej_1000"))
    (warning,) = coverage(frame, FACTORS, ["test.sig_eff_at_bkg_rej_1000"])[-1:]
    assert warning.startswith("test.sig_eff_at_bkg_rej_1000 is n/a in 7 of 7 finished jobs")


def test_settings_layers_override_in_order_and_errors_name_the_layer(tmp_path):
    base = ReportConfig.model_validate({"metric": "test.auroc", "top_k": 3, "baseline": {"vect": 4}})
    assert base.baseline == {"vect": "4"}  # YAML numbers name levels as strings
    spec = tmp_path / "thesis.yaml"
    spec.write_text("metric: test.f1\nmetrics: [test.auroc]\n")
    s = ReportSettings.resolve(base, spec, parse_flags(None, None, ("tokenizer=direct",), ("tokenizer:vect",), None))
    assert (s.metric, s.metrics, s.top_k) == ("test.f1", ["test.f1", "test.auroc"], 3)
    assert s.baseline == {"tokenizer": "direct"} and s.interactions == [("tokenizer", "vect")]
    spec.write_text("metrik: test.f1\n")
    with pytest.raises(SpecError, match=r"thesis.yaml: metrik: unknown key; valid keys: baseline, bootstrap"):
        ReportSettings.resolve(base, spec)
    with pytest.raises(SpecError, match="--baseline takes FACTOR=LEVEL"):
        parse_flags(None, None, ("tokenizer",), (), None)


def test_baseline_level_must_exist():
    s = ReportSettings.resolve(ReportConfig(baseline={"tokenizer": "vqvae"}))
    with pytest.raises(SpecError, match=r"report.baseline.tokenizer: no level 'vqvae'; levels: direct, binned"):
        s.check_levels({"tokenizer": ["direct", "binned"]})


def test_default_interactions_pair_the_baseline_factor_with_the_others():
    s = ReportSettings.resolve(ReportConfig(baseline={"tokenizer": "direct"}))
    assert s.interaction_pairs(["pooling", "tokenizer", "met"]) == [("tokenizer", "pooling"), ("tokenizer", "met")]
    assert ReportSettings.resolve(ReportConfig()).interaction_pairs(["a", "b", "c"]) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]


@pytest.mark.parametrize("spec", sorted((Path(__file__).parents[2] / "reports").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_report_specs_are_valid(spec):
    s = ReportSettings.resolve(ReportConfig(), spec)
    assert s.metric == s.metrics[0]


def test_nothing_finished_is_one_line_per_reason():
    frame = results().with_columns(pl.lit("new").alias("state"))
    assert coverage(frame, FACTORS, ["test.auroc"]) == [
        "partial results: 0 of 8 jobs done; left out: 8 new",
        "missing: all 4 cells (no finished job)",
    ]


def test_a_factor_added_since_a_job_ran_takes_its_level_from_the_matrix(tmp_path):
    """A job recorded before a factor was added (same config, same id) is not left without that factor's level."""
    matrix = build_matrix(write_experiment(tmp_path, factors={"tokenizer": ["direct", "binned_ambre5"],
                                                              "met": {"with": {"data.use_met": True}}}))  # fmt: skip
    store = RunStore(tmp_path / "runs", matrix.spec.name)
    job = matrix.jobs[0]
    store.write_job(replace(job, levels={"tokenizer": job.levels["tokenizer"]}))  # as recorded before `met` existed
    frame = collect(matrix, store)
    assert frame["met"].to_list() == ["with", "with"] and frame["tokenizer"].to_list() == ["direct", "binned_ambre5"]
