"""The report's statistics: interval coverage, p-value adjustment, the factorial model, seeds needed, convergence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from expmatrix.report.anova import factorial
from expmatrix.report.convergence import late_gain, verdict
from expmatrix.report.effects import factor_effects
from expmatrix.report.seeds import power, resolvable, seed_noise, seeds_frame, seeds_needed
from expmatrix.report.stats import StatsSettings, adjust, interval, paired_stats, prob_better, t_interval, wins_of
from expmatrix.report.tables import anova_table, emm_table, seeds_table

REPS = 2000  # Monte-Carlo repetitions: the standard error of a 95% coverage is 0.49%


@pytest.mark.parametrize("n", [2, 3, 4, 6, 8, 12, 24])
def test_the_default_interval_covers_at_its_stated_level_for_every_number_of_pairs(n):
    d = np.random.default_rng(n).normal(0.01, 0.003, size=(REPS, n))
    low, high = t_interval(d, 0.95)
    covered = np.mean((low <= 0.01) & (high >= 0.01))
    assert abs(covered - 0.95) < 3 * math.sqrt(0.95 * 0.05 / REPS), covered


@pytest.mark.parametrize("n", [2, 3, 4, 6, 8, 12, 24])
def test_p_better_covers_the_mean_chance_over_heterogeneous_cells_at_its_stated_level(n):
    rng = np.random.default_rng(100 + n)
    shift = rng.normal(0.0, 0.01, size=n)  # each pair its own cell: true chances from about 0.1 to 0.9
    chance = stats.norm.cdf(shift / 0.008)
    d = rng.normal(shift, 0.008, size=(REPS, n))
    share, low, high = prob_better(wins_of(d, higher=True), 0.95)
    covered = np.mean((low <= chance.mean()) & (chance.mean() <= high))
    assert covered >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / REPS), covered  # at least its stated coverage
    assert share.mean() == pytest.approx(chance.mean(), abs=0.02)  # unbiased
    if n == 24:
        assert np.mean(high - low) < 0.45  # and informative with many pairs


def test_p_better_by_hand_and_in_the_metric_direction():
    share, low, high = prob_better(wins_of(np.array([0.01, 0.02, 0.03]), higher=True))
    assert (share, low, high) == (1.0, pytest.approx(0.025 ** (1 / 3)), 1.0)  # 3 of 3: [(alpha/2)^(1/n), 1]
    assert prob_better(wins_of(np.array([0.01, 0.02, 0.03]), higher=False))[0] == 0.0  # lower is better: all lost
    share, low, high = prob_better(wins_of(np.array([0.01, 0.0, -0.02, 0.03]), higher=True))
    assert share == pytest.approx(2.5 / 4)  # a tie counts half
    assert low == pytest.approx(stats.beta.ppf(0.025, 2.5, 2.5))  # Beta(k, n - k + 1) with k = 2.5 wins of 4
    assert high == pytest.approx(stats.beta.ppf(0.975, 3.5, 1.5))


def test_the_percentile_bootstrap_undercovers_with_few_pairs_so_it_is_refused_by_default():
    rng = np.random.default_rng(0)
    s = StatsSettings(interval="percentile", resamples=1000, min_pairs=2)
    covered = np.mean([lo <= 0 <= hi for lo, hi in (interval(rng.normal(0, 1, 4), s) for _ in range(400))])
    assert covered < 0.88  # about 80% at 4 pairs, where it claims 95%
    assert paired_stats(rng.normal(0, 1, 4), StatsSettings(interval="percentile")).ci_low is None
    assert paired_stats(rng.normal(0, 1, 20), StatsSettings(interval="percentile")).ci_low is not None


def test_two_seeds_no_longer_print_a_tight_interval_beside_p_half():
    d = np.array([-0.2185, -0.2122])  # the two differences of a 2-seed comparison
    t = paired_stats(d)  # Student t, 1 degree of freedom: 12.71 x sd / sqrt(2)
    assert t.ci_low == pytest.approx(-0.2153 - 12.7062 * 0.004455 / math.sqrt(2), abs=1e-4)
    assert t.ci_high == pytest.approx(-0.2153 + 12.7062 * 0.004455 / math.sqrt(2), abs=1e-4)
    assert (t.ci_high < 0) == (t.p < 0.05)  # interval and test agree
    old = paired_stats(d, StatsSettings(interval="percentile", min_pairs=2))
    assert (old.ci_low, old.ci_high) == (pytest.approx(-0.2185), pytest.approx(-0.2122)) and old.p == 0.5


def test_holm_and_benjamini_hochberg_by_hand():
    p = [0.01, 0.04, None, 0.03, 0.005]  # None: no test, not a comparison
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
    assert adjust(p, "bh") == pytest.approx([0.02, 0.04, None, 0.04, 0.02])
    assert adjust(p, "none") == p and adjust([None], "holm") == [None]
    assert adjust([0.6, 0.7], "holm") == [1.0, 1.0]  # capped at 1


TRUE = {  # known effects of a synthetic balanced matrix (AUROC units)
    "tokenizer": {"direct": 0.0, "binned": -0.03, "vqvae": -0.01},
    "met": {"with": 0.0, "without": -0.004},
    "pooling": {"cls": 0.0, "mean": 0.0},  # no effect
}
INTERACTION = {("binned", "without"): -0.006}  # binned loses more without MET
# marginal effects: the interaction averaged over the other factor's levels (2 MET levels, 3 tokenizers)
MARGINAL = {"binned": -0.03 - 0.006 / 2, "vqvae": -0.01, "without": -0.004 - 0.006 / 3, "mean": 0.0}
SEEDS = 4
NOISE = 0.002


def matrix(drop: int = 0) -> pl.DataFrame:
    """Every cell x 4 seeds, value = 0.8 + effects + seed offset + noise; `drop` jobs removed at random."""
    rng = np.random.default_rng(1)
    rows = []
    for (tok, met, pool), seed in itertools.product(itertools.product(*map(list, TRUE.values())), range(SEEDS)):
        v = 0.8 + TRUE["tokenizer"][tok] + TRUE["met"][met] + TRUE["pooling"][pool] + INTERACTION.get((tok, met), 0)
        v += 0.001 * seed + rng.normal(0, NOISE)
        rows.append({"job": f"{tok}{met}{pool}{seed}", "tokenizer": tok, "met": met, "pooling": pool, "seed": seed})
        rows[-1] |= {"state": "done", "test.auroc": v}
    frame = pl.DataFrame(rows)
    return frame.filter(~pl.col("job").is_in(rng.choice(frame["job"].to_list(), drop, replace=False).tolist()))


FACTORS = list(TRUE)
BASELINES = {"tokenizer": "direct", "met": "with", "pooling": "cls"}
PAIRS = [("tokenizer", "met"), ("tokenizer", "pooling"), ("met", "tokenizer")]  # the last one repeats the first


def test_the_factorial_model_recovers_known_effects_and_agrees_with_the_paired_tables():
    results = matrix()
    anova, emm, notes = factorial(results, "test.auroc", FACTORS, PAIRS, BASELINES, 0.95)
    assert notes == []
    terms = anova.rows_by_key("term", named=True, unique=True)
    assert list(terms) == ["seed", "tokenizer", "met", "pooling", "tokenizer × met", "tokenizer × pooling", "residual"]
    assert [terms[t]["df"] for t in terms] == [3, 2, 1, 1, 2, 2, 48 - 12]  # 12 parameters for 48 jobs
    # balanced: the sums of squares add up to the total
    y = results["test.auroc"].to_numpy()
    assert anova["sum_sq"].sum() == pytest.approx(((y - y.mean()) ** 2).sum(), rel=1e-9)
    assert terms["tokenizer"]["p"] < 1e-12 and terms["tokenizer × met"]["p"] < 1e-3
    assert terms["pooling"]["p"] > 0.01 and terms["tokenizer × pooling"]["p"] > 0.01  # no effect there
    eta = terms["tokenizer"]["sum_sq"] / (terms["tokenizer"]["sum_sq"] + terms["residual"]["sum_sq"])
    assert terms["tokenizer"]["partial_eta2"] == pytest.approx(eta)
    settings = StatsSettings()
    for factor, levels in TRUE.items():
        paired = factor_effects(results, FACTORS, "test.auroc", factor, BASELINES[factor], settings)
        for level in levels:
            if level == BASELINES[factor]:
                continue
            m = emm.filter((pl.col("factor") == factor) & (pl.col("level") == level)).row(0, named=True)
            assert m["delta_low"] < MARGINAL[level] < m["delta_high"], (factor, level, m)
            d = paired.filter(pl.col("level") == level)["delta"][0]
            assert m["delta"] == pytest.approx(d, abs=1e-12)  # balanced: the model's Δ is the paired Δ


def test_an_unbalanced_matrix_is_analysed_as_it_is():
    anova, emm, notes = factorial(matrix(drop=7), "test.auroc", FACTORS, PAIRS, BASELINES, 0.999)
    binned = emm.filter(pl.col("level") == "binned").row(0, named=True)
    assert binned["delta_low"] < MARGINAL["binned"] < binned["delta_high"]  # 99.9% interval
    assert binned["delta"] == pytest.approx(MARGINAL["binned"], abs=3 * NOISE / 4)
    assert anova.filter(pl.col("term") == "residual")["df"][0] == 48 - 7 - 12
    assert notes == []


def test_what_the_model_cannot_compute_is_said_not_printed_as_nan():
    one_seed = matrix().filter(pl.col("seed") == 0)
    anova, emm, notes = factorial(one_seed, "test.auroc", FACTORS, PAIRS, BASELINES, 0.95)
    assert "one seed: no seed block in the model" in notes and anova["term"][0] == "tokenizer"
    constant = matrix().with_columns(pl.lit(0.8).alias("test.auroc"))
    assert factorial(constant, "test.auroc", FACTORS, PAIRS, BASELINES, 0.95)[2] == [
        "test.auroc is the same in every finished job: nothing to analyse"
    ]
    tiny = matrix().filter((pl.col("seed") == 0) & (pl.col("pooling") == "cls") & (pl.col("met") == "with"))
    anova, emm, notes = factorial(tiny, "test.auroc", FACTORS, PAIRS, BASELINES, 0.95)  # 3 jobs, 3 parameters
    assert anova is None and emm is None and "no residual degrees of freedom" in notes[-1]
    main_only = matrix().filter((pl.col("seed") == 0) & (pl.col("pooling") == "cls"))  # 6 jobs: 4 parameters
    anova, emm, notes = factorial(main_only, "test.auroc", FACTORS, PAIRS, BASELINES, 0.95)
    assert "the interactions leave no residual degrees of freedom: main effects only" in notes
    text = str(anova_table(anova, "m", []).rows) + str(emm_table(emm, "m", []).rows)
    assert "nan" not in text.lower()
    missing = matrix().with_columns(
        pl.when(pl.col("seed") == 3).then(None).otherwise(pl.col("test.auroc")).alias("test.auroc")
    )
    anova, _, _ = factorial(missing, "test.auroc", FACTORS, PAIRS, BASELINES, 0.95)
    assert anova.filter(pl.col("term") == "seed")["df"][0] == 2  # jobs without the metric are left out


def test_power_and_sample_size_match_textbook_values():
    assert power(1.0, 1.0, 10, 9, 0.05) == pytest.approx(0.8031, abs=1e-3)  # paired t, n 10, effect size 1
    assert seeds_needed(0.5, 1.0, 1, 0.05, 0.8, pooled=False) == 34  # effect size 0.5: n = 34
    delta = resolvable(1.0, 10, 9, 0.05, 0.8)
    assert power(delta, 1.0, 10, 9, 0.05) == pytest.approx(0.8, abs=1e-6) and 0.99 < delta < 1.0
    assert seeds_needed(1e-6, 1.0, 1, 0.05, 0.8, pooled=False) is None  # beyond the search bound


def test_seed_noise_ignores_the_spread_between_cells():
    pairs = pl.DataFrame({"met": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "d": [1.0, 3.0, 10.0, 12.0]})
    assert seed_noise(pairs, ["met"]) == (pytest.approx(math.sqrt(2)), 2)
    assert seed_noise(pairs.filter(pl.col("seed") == 0), ["met"]) == (None, 0)


def test_the_seeds_table_scales_with_the_noise():
    results = matrix()
    seeds = seeds_frame(results, FACTORS, "test.auroc", BASELINES, 0.002, 0.95, 0.8)
    binned = seeds.filter(pl.col("level") == "binned").row(0, named=True)
    assert (binned["pairs"], binned["cell_pairs"], binned["seeds"]) == (16, 4, 4.0)
    assert binned["seed_sd"] == pytest.approx(NOISE * math.sqrt(2), rel=0.4)  # a difference of two noisy jobs
    assert binned["resolvable"] < binned["resolvable_cell"]  # 16 pairs resolve less than 4
    assert binned["seeds_for_difference"] < binned["seeds_for_difference_cell"]
    noisier = results.with_columns(pl.col("test.auroc") + pl.Series(np.random.default_rng(5).normal(0, 0.01, 48)))
    worse = seeds_frame(noisier, FACTORS, "test.auroc", BASELINES, 0.002, 0.95, 0.8).row(0, named=True)
    assert worse["seeds_for_difference"] > binned["seeds_for_difference"]
    table = seeds_table(seeds, "test.auroc", 0.002, 0.8, 0.95)
    assert table.rows[0][:3] == ["tokenizer", "binned vs direct", "16 (4 × 4)"]


def test_late_gain_of_a_line_and_of_a_plateau():
    gain, scatter = late_gain(np.array([0.5, 0.6, 0.7, 0.8, 0.9]), 3, higher=True)
    assert gain == pytest.approx(0.2) and scatter == pytest.approx(0.0, abs=1e-12)
    assert late_gain(np.array([0.3, 0.2, 0.1]), 3, higher=False)[0] == pytest.approx(0.2)  # a falling angle improves


def test_a_cell_still_climbing_is_told_from_one_on_its_plateau():
    # measured shapes (issue 18): the joint-token arm still rising at the last epoch, direct flat from epoch 3
    binned = [np.array([0.691, 0.72, 0.745, 0.765, 0.785]), np.array([0.70, 0.725, 0.75, 0.77, 0.78])]
    direct = [np.array([0.84, 0.858, 0.86, 0.859, 0.861]), np.array([0.845, 0.859, 0.861, 0.86, 0.858])]
    assert verdict(binned, 3, True)["converged"] == "still improving"
    assert verdict(direct, 3, True)["converged"] == "yes"
    assert verdict([np.array([0.8])], 3, True)["converged"] == "n/a"  # one epoch: cannot tell
    two_epochs = verdict([np.array([0.6, 0.7]), np.array([0.62, 0.71])], 3, True)
    assert two_epochs["epochs"] == 2 and two_epochs["converged"] == "still improving"
