"""Report tables on a hand-made results frame whose answers are known."""

from __future__ import annotations

import polars as pl

from expmatrix.report.tables import cell_table, paired_effect

FACTORS = ["tokenizer", "pooling"]


def _results() -> pl.DataFrame:
    rows = []
    auroc = {("direct", "cls"): [0.80, 0.82], ("binned", "cls"): [0.75, 0.79], ("direct", "max"): [0.70, 0.72]}
    for (tok, pool), values in auroc.items():
        for seed, v in enumerate(values):
            rows.append({"job": f"{tok}{pool}{seed}", "tokenizer": tok, "pooling": pool, "seed": seed,
                         "state": "done", "test.auroc": v, "params": 1000, "train_seconds": 2.0})  # fmt: skip
    rows.append({"job": "bm0", "tokenizer": "binned", "pooling": "max", "seed": 0, "state": "failed", "error": "boom"})
    return pl.DataFrame(rows, infer_schema_length=None)


def test_cell_table_means_ranks_and_warns():
    t = cell_table(_results(), FACTORS, "test.auroc", seeds=2)
    assert [r[:3] for r in t.rows] == [
        ["direct", "cls", "0.8100 ± 0.0141"],
        ["binned", "cls", "0.7700 ± 0.0283"],
        ["direct", "max", "0.7100 ± 0.0141"],
    ]
    assert t.warnings == [
        "failed job bm0 (tokenizer=binned, pooling=max, seed 0): boom",
        "missing cell (no finished job): tokenizer=binned, pooling=max",
    ]


def test_paired_effect_matches_on_other_factors_and_seed():
    t = paired_effect(_results(), FACTORS, "test.auroc", "tokenizer", "direct")
    # binned pairs only with direct/cls (direct/max has no binned partner): diffs -0.05, -0.03
    assert t.rows == [["direct", "0.7600", "(baseline)", 4], ["binned", "0.7700", "-0.0400 ± 0.0141", 2]]
