"""The whole path through the CLI: run a tiny matrix, report it, skip it, survive a failing job."""

from __future__ import annotations

import json

import h5py
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import write_experiment
from sklearn.metrics import roc_auc_score

from expmatrix.cli import main
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.usefixtures("one_thread")
def test_tiny_matrix_runs_reports_and_is_skipped_the_second_time(tmp_path):
    # one worker, in this process: a pool's workers would each import torch (the pool: tests/executors)
    exp, runs = write_experiment(tmp_path), str(tmp_path / "runs")
    first = cli("run", str(exp), "--runs", runs, "--workers", "1", "--threads", "1")
    assert first.exit_code == 0, first.output
    assert "2 done" in first.output
    store = RunStore(runs, "tiny")
    assert len(store.job_ids()) == 2
    for d in map(store.job, store.job_ids()):
        metrics = json.loads(d.metrics.read_text())
        assert metrics["evaluated_weights"] == "last" and metrics["epochs"] == 1
        assert 0.5 < metrics["test"]["auroc"] <= 1.0
        assert len(d.history.read_text().splitlines()) == 1
        preds = pl.read_parquet(d.predictions)
        assert preds.height == metrics["events"]["test"] and set(preds["label"].unique()) == {0, 1}
        # the reported metric is the one of the saved predictions: one forward path, one signal class
        assert roc_auc_score(preds["label"], preds["score"]) == pytest.approx(metrics["test"]["auroc"], abs=1e-12)

    second = cli("run", str(exp), "--runs", runs)
    assert second.exit_code == 0 and "nothing to train: 2 done already" in second.output

    rep = cli("report", str(exp), "--runs", runs, "--wide")  # the cells table whole: one line per cell
    assert rep.exit_code == 0, rep.output
    assert "test.auroc (mean ± std)" in rep.output and "warning" not in rep.output
    lines = {line.split()[0]: line for line in rep.output.splitlines() if line.startswith(("direct", "binned"))}
    assert set(lines) == {"direct", "binned_ambre5"}
    results = pl.read_parquet(tmp_path / "runs" / "tiny" / "results.parquet")
    auroc = dict(zip(results["tokenizer"], results["test.auroc"], strict=True))
    assert f"{auroc['direct']:.4f}" in lines["direct"]
    assert "| tokenizer" in (tmp_path / "runs" / "tiny" / "report.md").read_text()


@pytest.mark.usefixtures("one_thread")
def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path):
    # 10 training events leave 1 in val: a split with one class, found when the job reads its data
    # (a file without a dataset a job names stops the whole run before any job: tests/e2e/test_damaged.py)
    sizes = {"good": {"data.max_events": 2400}, "bad": {"data.max_events": 10}}
    factors = {"tokenizer": ["direct"], "source": sizes}
    exp, runs = write_experiment(tmp_path, factors=factors), str(tmp_path / "runs")
    result = cli("run", str(exp), "--runs", runs, "--workers", "1", "--threads", "1")
    assert result.exit_code == 1
    assert "1 done, 1 failed" in result.output and "split 'val' has no events of one class" in result.output
    rep = cli("report", str(exp), "--runs", runs)
    assert "warning: failed job" in rep.output and "source=bad" in rep.output
    assert "warning: missing cell (no finished job): tokenizer=direct, source=bad" in rep.output


def test_bad_yaml_exits_nonzero_before_writing_anything(tmp_path):
    exp = write_experiment(tmp_path, base={"model": {"pooling": "avg"}})
    result = CliRunner().invoke(main, ["run", str(exp), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "base.model.pooling: Input should be 'cls', 'mean' or 'max'" in result.output
    assert not (tmp_path / "runs").exists()


def test_data_synth_command_is_deterministic(tmp_path):
    for name in ("a.h5", "b.h5"):
        assert (
            cli("data", "synth", "fourtops", "--out", str(tmp_path / name), "--events", "500", "--seed", "4").exit_code
            == 0
        )
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert all(np.array_equal(a[k][:], b[k][:]) for k in a)


@pytest.mark.usefixtures("one_thread")
def test_a_matrix_on_a_real_file_runs(tmp_path, small_h5):
    exp = write_experiment(tmp_path, data={"path": str(small_h5)}, factors={"tokenizer": ["binned_ambre5"]})
    result = cli("run", str(exp), "--runs", str(tmp_path / "runs"), "--workers", "1", "--threads", "1")
    assert result.exit_code == 0 and "1 done" in result.output, result.output
    store = RunStore(tmp_path / "runs", "tiny")
    (job,) = store.job_ids()
    assert store.metrics(job)["events"]["train"] == 4800  # 80% of 6000
