"""Damaged run files and bad data files through the CLI: named with the job and the file, no traceback,
the other jobs go on, and `run` redoes a damaged job from where it can.

One tiny matrix (2 jobs, 1 epoch) is trained once; each test damages a copy of its runs folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_experiment

from expmatrix.cli import main
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes


def cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment, runs folder) of the tiny matrix, both jobs done."""
    folder = tmp_path_factory.mktemp("trained")
    exp, runs = write_experiment(folder), folder / "runs"
    result = cli("run", exp, "--runs", runs, "--workers", "1", "--threads", "1")
    assert result.exit_code == 0 and "2 done" in result.output, result.output
    return exp, runs


@pytest.fixture
def copy(trained, tmp_path) -> tuple[Path, RunStore, list[str]]:
    """(experiment, a copy of the trained runs, job ids): each test damages its own."""
    exp, runs = trained
    shutil.copytree(runs, tmp_path / "runs")
    return exp, RunStore(tmp_path / "runs", "tiny"), [j.id for j in build_matrix(exp).jobs]


def started(runs: Path) -> list[str]:
    """The jobs of runs/tiny that have a status: a job that was started (or marked failed)."""
    store = RunStore(runs, "tiny")
    return [job for job in store.job_ids() if store.job(job).status.exists()]


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def _redo(exp: Path, store: RunStore, job: str, other: str) -> str:
    """`run` the matrix: only `job` is trained again, it ends done, the other job is left alone."""
    result = cli("run", exp, "--runs", store.root, "--workers", "1", "--threads", "1")
    assert result.exit_code == 0 and "1 done" in result.output and "1 done already" in result.output, result.output
    assert store.state(job) == "done" and len(store.starts(other)) == 1
    return result.output


def test_a_truncated_status_json_is_named_by_status_report_and_redone_by_run(copy):
    exp, store, (job, other) = copy
    metrics = store.metrics(job)
    original = _truncate(store.job(job).status)
    damaged = f"job {job}: status.json is damaged (truncated JSON: "

    status = cli("status", exp, "--runs", store.root)
    assert status.exit_code == 0 and "1 damaged, 1 done" in status.output
    assert damaged in status.output and str(store.job(job).status) in status.output
    report = cli("report", exp, "--runs", store.root, "--no-plots", "--wide")  # warnings unwrapped
    assert report.exit_code == 0 and "left out: 1 damaged" in report.output
    assert f"damaged job {job} (tokenizer=" in report.output and damaged in report.output

    out = _redo(exp, store, job, other)
    redone = "status.json was damaged (truncated JSON: "
    assert f"redone {job} " in out and redone in out and "resumed from checkpoint.pt after epoch 1 of 1" in out
    assert "resumed from checkpoint.pt after epoch 1 of 1" in store.status(job)["redone"]  # and in status.json
    (aside,) = store.job(job).dir.glob(f"{store.job(job).status.name}.damaged-*")
    assert original.startswith(aside.read_bytes())  # set aside as it was, never deleted
    assert store.metrics(job)["test"] == metrics["test"]  # evaluated again from the last checkpoint


def test_an_empty_metrics_json_of_a_done_job_is_left_out_of_the_report_and_retrained(copy):
    exp, store, (job, other) = copy
    metrics = store.metrics(job)
    store.job(job).metrics.write_text("")
    damaged = f"job {job}: metrics.json is damaged (empty file): {store.job(job).metrics}"

    status = cli("status", exp, "--runs", store.root)
    assert status.exit_code == 0 and "1 damaged, 1 done" in status.output and damaged in status.output
    report = cli("report", exp, "--runs", store.root, "--no-plots", "--wide")  # warnings unwrapped
    assert report.exit_code == 0 and "partial results: 1 of 2 jobs done; left out: 1 damaged" in report.output
    assert f"damaged job {job} (tokenizer=" in report.output and damaged in report.output

    out = _redo(exp, store, job, other)
    assert f"redone {job} " in out
    assert "metrics.json was damaged (empty file), set aside as metrics.json.damaged-" in out
    assert store.metrics(job)["test"] == metrics["test"]
    assert cli("report", exp, "--runs", store.root, "--no-plots").output.count("warning") == 0


def test_a_truncated_checkpoint_is_named_and_the_job_trained_again_from_scratch(copy):
    exp, store, (job, other) = copy
    metrics = store.metrics(job)
    store.job(job).metrics.unlink()  # the job was killed in its last epoch: running, no live claim
    store.set_status(job, "running", epoch=0, epochs=1)
    _truncate(store.job(job).checkpoint)
    damaged = f"job {job}: checkpoint.pt is damaged (truncated or not a zip archive: "

    status = cli("status", exp, "--runs", store.root)
    assert status.exit_code == 0 and "1 damaged, 1 done" in status.output and damaged in status.output
    out = _redo(exp, store, job, other)
    assert f"redone {job} " in out and "checkpoint.pt was damaged (truncated or not a zip archive" in out
    assert out.count("trained from scratch") == 1 and store.status(job)["redone"].endswith("trained from scratch")
    assert len(list(store.job(job).dir.glob("checkpoint.pt.damaged-*"))) == 1
    assert store.metrics(job)["test"] == metrics["test"]  # the same seed from scratch: the same numbers


def test_a_checkpoint_with_a_flipped_byte_is_caught_by_its_crc(copy):
    exp, store, (job, other) = copy
    store.set_status(job, "preempted", reason="SIGTERM after epoch 1")
    path = store.job(job).checkpoint
    with zipfile.ZipFile(path) as z:  # a byte in the middle of the largest tensor's data
        member = max(z.infolist(), key=lambda m: m.file_size)
        at = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra) + member.file_size // 2
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF  # torch.load reads it without a word
    path.write_bytes(bytes(data))
    out = _redo(exp, store, job, other)
    assert "checkpoint.pt was damaged (corrupt: CRC mismatch in " in out and "trained from scratch" in out


def test_a_data_file_that_is_not_hdf5_stops_the_run_before_any_job(tmp_path):
    data = (tmp_path / "4tops.h5").resolve()
    data.write_text("hello, not a table\n")
    exp, runs = write_experiment(tmp_path, data={"path": str(data)}), tmp_path / "runs"
    result = cli("run", exp, "--runs", runs, "--workers", "1")
    assert result.exit_code == 1
    assert f"Error: {data}: not an HDF5 file (first bytes b'hello, not a tab')" in result.output
    assert not started(runs)  # no job was started, none marked failed
    templates = Path(__file__).resolve().parents[2] / "hpc"
    submit = cli("submit", exp, "--runs", runs, "--backend", "slurm", "--dry-run", "--hpc", f"templates={templates}")
    assert submit.exit_code == 1 and f"Error: {data}: not an HDF5 file" in submit.output
    assert not (runs / "tiny" / "_submit").exists()  # nothing written, nothing queued


def test_a_missing_dataset_stops_the_run_and_lists_what_the_file_holds(tmp_path, small_h5):
    keys = {"good": {"data.keys.y_train": "Y_train"}, "bad": {"data.keys.y_train": "y_train"}}  # the real casing
    factors = {"tokenizer": ["direct"], "source": keys}
    exp, runs = write_experiment(tmp_path, data={"path": str(small_h5)}, factors=factors), tmp_path / "runs"
    result = cli("run", exp, "--runs", runs, "--workers", "1")
    assert result.exit_code == 1, result.output
    found = "X_test, X_train, X_val, Y_train, y_test, y_val"
    assert f"Error: {small_h5}: no dataset 'y_train'; found: {found}" in result.output
    assert not started(runs)


def test_list_status_and_report_agree_on_a_stale_claim(tmp_path):
    exp = write_experiment(tmp_path, run={"stale_after_seconds": 120, "heartbeat_seconds": 1})
    job, _ = build_matrix(exp).jobs
    store = RunStore(tmp_path / "runs", "tiny")
    store.set_status(job.id, "running", epoch=0, epochs=1)
    store.job(job.id).claim.write_text(json.dumps({"host": "node-that-crashed", "pid": 4242, "nonce": "x"}))
    old = time.time() - 121  # stale for this experiment, not for the default of 600 s
    os.utime(store.job(job.id).claim, (old, old))
    listed = cli("list", exp, "--runs", store.root).output
    assert [line.split()[-1] for line in listed.splitlines() if line.startswith(job.id)] == ["interrupted"]
    assert "1 new, 1 interrupted" in cli("status", exp, "--runs", store.root).output
    assert "left out: 1 interrupted, 1 new" in cli("report", exp, "--runs", store.root, "--no-plots").output
