"""Seeds that stalled: the leave-one-out rule of convergence.py on hand-made curves, then through a report built
from hand-written run directories."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from conftest import write_experiment

from expmatrix.config import ReportConfig
from expmatrix.matrix import build_matrix
from expmatrix.report import page_data
from expmatrix.report.build import build_report
from expmatrix.report.convergence import convergence_warning, stalled, verdict
from expmatrix.report.formats import FORMATS
from expmatrix.report.settings import ReportSettings
from expmatrix.report.tables import cells_table
from expmatrix.runfiles import write_json
from expmatrix.store import RunStore

# measured (docs/icecube.md): the hierarchical model's validation angle [rad], 8 epochs; seed 0 never trained
HIERARCHICAL = [
    np.array([0.97, 0.93, 0.90, 0.88, 0.86, 0.85, 0.845, 0.84]),
    np.array([0.42, 0.33, 0.28, 0.25, 0.23, 0.22, 0.212, 0.21]),
    np.array([0.46, 0.35, 0.29, 0.26, 0.24, 0.22, 0.213, 0.21]),
]


def ending(finals: list[float], start: float = 0.45) -> list[np.ndarray]:
    """Curves from `start` to each final value in 4 epochs, then flat for 2 (converged)."""
    return [np.r_[np.linspace(start, f, 4), f, f] for f in finals]


def test_the_measured_stalled_seed_is_flagged_though_the_trend_calls_the_cell_converged():
    v = verdict(HIERARCHICAL, 3, higher=False)
    assert v["stalled"] == "0"
    assert v["converged"] == "yes"  # its seeds all stopped improving: the trend alone cannot tell
    assert v["noise"] == pytest.approx(np.std([0.84, 0.21, 0.21], ddof=1))  # the numbers keep the seed
    assert verdict(HIERARCHICAL, 3, False, seeds=[4, 5, 6])["stalled"] == "4"  # named by its seed


def test_ordinary_seed_noise_is_not_flagged():
    assert verdict(ending([0.210, 0.205, 0.214]), 3, higher=False)["stalled"] == ""
    assert stalled([0.210, 0.205, 0.214, 0.220, 0.201], higher=False) == []


def test_the_margin_is_the_larger_of_four_sds_and_a_quarter_of_the_others_mean():
    # others 0.20, 0.20: sd 0, so the floor, 0.25 * 0.20 = 0.05, decides
    assert stalled([0.2499, 0.20, 0.20], higher=False) == []
    assert stalled([0.2501, 0.20, 0.20], higher=False) == [0]
    # others 0.20, 0.22: 4 sd = 0.05657 beats the floor 0.0525; the mean is 0.21
    assert stalled([0.266, 0.20, 0.22], higher=False) == []
    assert stalled([0.267, 0.20, 0.22], higher=False) == [0]
    # two stalled seeds among five inflate each other's sd: neither is flagged (the rule's stated limit); one is
    assert stalled([0.84, 0.83, 0.21, 0.21, 0.22], higher=False) == []
    assert stalled([0.84, 0.21, 0.215, 0.21, 0.22], higher=False) == [0]


def test_two_seeds_are_never_flagged():
    assert stalled([0.84, 0.21], higher=False) == [] and stalled([0.5, 0.85], higher=True) == []
    assert verdict(HIERARCHICAL[:2], 3, higher=False)["stalled"] == ""
    assert stalled([0.84, 0.21, float("nan")], higher=False) == []  # 2 finite values


def test_higher_is_better_is_the_mirror_image():
    auroc = [0.52, 0.85, 0.86]
    assert stalled(auroc, higher=True) == [0]
    assert stalled(auroc, higher=False) == []  # the same values, lower better: 0.52 is the best seed
    assert stalled([-a for a in auroc], higher=False) == [0]
    assert stalled([0.850, 0.845, 0.853], higher=True) == []
    assert stalled([0.75, 0.85, 0.86], higher=True) == []  # 12% behind: under the 25% floor (see convergence.py)
    assert verdict(ending(auroc, start=0.6), 3, higher=True)["stalled"] == "0"


def conv_frame() -> pl.DataFrame:
    cells = {"hierarchical": HIERARCHICAL, "flat": ending([0.210, 0.205, 0.214])}
    return pl.DataFrame([{"model": m} | verdict(c, 3, higher=False) for m, c in cells.items()])


def test_the_warning_names_the_cell_and_seed():
    (warning,) = convergence_warning(conv_frame(), ["model"], "val_angle_median", 3)
    assert warning.startswith(
        "stalled seeds: in 1 of 2 cells a seed ended far behind its cell-mates in val_angle_median (worse than"
        " their mean by more than max(4 × their sd, 25% of the mean)): model=hierarchical: seed 0; the cell's"
        " mean carries a seed that did not train"
    )
    assert "run more seeds or look at that seed's learning curve" in warning
    two = conv_frame().with_columns(pl.lit("0, 2").alias("stalled"))
    assert "model=hierarchical: seeds 0, 2; model=flat: seeds 0, 2;" in convergence_warning(two, ["model"], "x", 3)[0]


def test_the_cells_table_shows_stalled_seeds_only_when_there_are_some():
    stats = conv_frame().with_columns(
        pl.lit(0.3).alias("m mean"), pl.lit(0.01).alias("m std"), jobs=3, params=10, train_seconds=1.0
    )
    table = cells_table(stats, ["model"], ["m"], {"m": False})
    assert table.headers[-2:] == ["converged", "stalled seeds"]
    assert [r[-2:] for r in table.rows] == [["yes", "0"], ["yes", "-"]]
    clean = cells_table(stats.filter(pl.col("model") == "flat"), ["model"], ["m"], {"m": False})
    assert clean.headers[-1] == "converged"


# through the report: 2 tokenizers x 3 seeds, run directories written by hand; binned_ambre5 seed 0 stalled
FINAL = {("direct", 0): 0.85, ("direct", 1): 0.86, ("direct", 2): 0.855}
FINAL |= {("binned_ambre5", 0): 0.52, ("binned_ambre5", 1): 0.80, ("binned_ambre5", 2): 0.81}


def test_a_report_flags_the_stalled_seed_in_its_table_warning_csv_and_page(tmp_path):
    matrix = build_matrix(write_experiment(tmp_path, seeds=[0, 1, 2]))
    store = RunStore(tmp_path / "runs", matrix.spec.name)
    for job in matrix.jobs:
        final = FINAL[job.levels["tokenizer"], job.seed]
        store.write_job(job)
        store.set_status(job.id, "done")
        write_json(store.job(job.id).metrics, {"test": {"auroc": final - 0.01}, "params": 1000, "train_seconds": 2.0})
        curve = ending([final], start=0.5)[0]
        lines = [json.dumps({"epoch": e + 1, "val_auroc": float(v)}) for e, v in enumerate(curve)]
        store.job(job.id).history.write_text("\n".join(lines) + "\n")
    s = ReportSettings.resolve(ReportConfig(metrics=["test.auroc"], baseline={"tokenizer": "direct"}))
    report, results = build_report(matrix, store, s, None, "stalled")
    conv = report.frames["convergence"].rows_by_key("tokenizer", named=True, unique=True)
    assert (conv["binned_ambre5"]["stalled"], conv["direct"]["stalled"]) == ("0", "")
    (warning,) = [w for w in report.warnings if w.startswith("stalled seeds:")]
    assert warning.startswith("stalled seeds: in 1 of 2 cells") and "tokenizer=binned_ambre5: seed 0;" in warning
    cells = report.tables[0]
    assert cells.headers[-1] == "stalled seeds"
    assert {r[0]: r[-1] for r in cells.rows} == {"direct": "-", "binned_ambre5": "0"}
    # the numbers keep the seed: the cell's mean is over all three
    binned = report.frames["summary"].filter(pl.col("tokenizer") == "binned_ambre5")
    assert binned["test.auroc mean"][0] == pytest.approx((0.52 + 0.80 + 0.81) / 3 - 0.01)
    markdown = FORMATS["markdown"](report)
    assert "| stalled seeds " in markdown and f"> warning: {warning}" in markdown
    page = page_data.cells(report.frames["summary"], results, ["tokenizer"], s.metrics)
    assert dict(zip(page["tokenizer"], page["stalled"], strict=True)) == {"direct": "", "binned_ambre5": "0"}
