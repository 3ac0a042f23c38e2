"""The matrix runner with real processes: kill -9 and resume, two runners at once, stale claims,
torn writes, failures and retries, the shared tokenizer-fit stage, wandb offline."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from adapters import trained_an_epoch
from click.testing import CliRunner
from conftest import expmatrix, write_experiment

from expmatrix.cli import main
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes

THREE_EPOCHS = {
    "model": {"target_params": 20000, "layers": 2, "heads": 4},
    "train": {"epochs": 3, "batch_size": 128, "warmup_steps": 5, "lr": 1e-3},
}

SMALL = {"path": "synthetic", "synthetic": {"events": 1000, "seed": 1}}  # 100 val and 100 test events: both classes


# time limits only catch a hang: generous, so that a loaded machine is slow, not failing
def finish(proc: subprocess.Popen, timeout: float = 1200) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def wait_for(predicate, timeout: float = 600) -> None:
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.1)


def final_metrics(runs: Path) -> dict[str, dict]:
    store = RunStore(runs, "tiny")
    return {job: store.metrics(job) for job in store.job_ids()}


def same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys() and a
    for job in a:
        assert a[job]["test"] == b[job]["test"], job  # bitwise equal floats
        assert a[job]["val"] == b[job]["val"], job


def run_here(*args: str) -> str:
    """`expmatrix ARGS` in this process (no process to start: ~6 s of CPU less); its output."""
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.output


def test_kill_9_of_the_runner_resumes_to_the_uninterrupted_result(tmp_path):
    exp = write_experiment(tmp_path, base=THREE_EPOCHS)
    # the uninterrupted reference, here, one job after another with one thread: a pool worker's results equal
    # these bitwise (tests/executors/test_contract.py)
    whole = tmp_path / "whole"
    assert "2 done" in run_here("run", str(exp), "--runs", str(whole), "--workers", "1", "--threads", "1")

    runs = tmp_path / "killed"
    args = ["run", str(exp), "--workers", "2", "--threads", "1", "--runs", str(runs)]
    runner = expmatrix(*args)
    store = RunStore(runs, "tiny")
    ids = [j.id for j in build_matrix(exp).jobs]
    frozen: set[str] = set()

    def both_frozen() -> bool:  # each pool worker frozen after its job's first epoch: no job ends before the kill
        assert runner.poll() is None, finish(runner)
        for i in set(ids) - frozen:
            if (pid := trained_an_epoch(store, i)) is not None:
                os.kill(pid, signal.SIGSTOP)
                frozen.add(i)
        return frozen == set(ids)

    try:
        wait_for(both_frozen)
    finally:
        runner.send_signal(signal.SIGKILL)  # the runner only: its (frozen) pool workers must die with it
        runner.wait()
    wait_for(lambda: all(store.state(i) == "interrupted" for i in ids), timeout=600)
    assert all(1 <= store.status(i)["epoch"] < 3 for i in ids)

    # the resuming runner, here, one job after another: the pool's workers train with the same `run_job` (and
    # two more processes would cost ~15 s of CPU); resuming from a pool worker's checkpoint is the point
    out = run_here("run", str(exp), "--workers", "1", "--threads", "1", "--runs", str(runs))
    assert "2 done" in out, out
    assert all([s["resumed"] for s in store.starts(i)] == [False, True] for i in ids)
    same_results(final_metrics(whole), final_metrics(runs))


def test_a_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path):
    exp = write_experiment(tmp_path, base=THREE_EPOCHS, factors={"tokenizer": ["direct"]})
    args = ["run", str(exp), "--workers", "1", "--threads", "1"]
    assert "1 done" in run_here(*args, "--runs", str(tmp_path / "whole"))  # the reference, in this process
    runs = tmp_path / "torn"
    no_wandb = tmp_path / "no_wandb" / "wandb"  # `tracking: none` must not need wandb installed
    no_wandb.mkdir(parents=True)
    (no_wandb / "__init__.py").write_text("raise ImportError('wandb is not installed here')")
    path = os.pathsep.join([str(no_wandb.parent), os.environ.get("PYTHONPATH", "")])
    crashed = expmatrix(
        *args, "--runs", str(runs), env={"EXPMATRIX_CRASH_WRITE": "checkpoint.pt:2", "PYTHONPATH": path}
    )
    finish(crashed)
    assert crashed.returncode == -signal.SIGKILL
    (job,) = build_matrix(exp).jobs
    store = RunStore(runs, "tiny")
    assert list(store.job(job.id).dir.glob(".checkpoint.pt.*.tmp"))  # the torn write, never read
    assert store.state(job.id) == "interrupted" and store.status(job.id)["epoch"] == 1  # epoch 2 was lost
    out = run_here(*args, "--runs", str(runs))
    assert "1 done" in out, out
    same_results(final_metrics(tmp_path / "whole"), final_metrics(runs))


def test_two_runners_at_once_train_every_job_exactly_once(tmp_path):
    factors = {"tokenizer": ["direct", "binned_ambre5"], "model.pooling": ["cls", "mean"]}
    exp = write_experiment(tmp_path, factors=factors)
    args = ["run", str(exp), "--runs", str(tmp_path / "runs"), "--workers", "1", "--threads", "1"]
    store = RunStore(tmp_path / "runs", "tiny")
    jobs = build_matrix(exp).jobs
    assert len(jobs) == 4

    def at_work() -> set[int]:  # the runners whose pid a job's status names
        out = set()
        for job in jobs:
            with contextlib.suppress(OSError, ValueError):  # not written yet
                out.add(json.loads(store.job(job.id).status.read_text())["pid"])
        return out

    a, b = expmatrix(*args), expmatrix(*args)
    # both start at once; the first to train a job waits (SIGSTOP) until the other trains one too: both do
    # work, however the machine schedules them
    wait_for(lambda: bool(at_work() & {a.pid, b.pid}))
    first, second = (a, b) if a.pid in at_work() else (b, a)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: second.pid in at_work() or second.poll() is not None)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out_a, out_b = finish(a), finish(b)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    assert [len(store.starts(j.id)) for j in jobs] == [1] * 4  # trained once each
    assert all(store.state(j.id) == "done" for j in jobs)
    assert {store.status(j.id)["pid"] for j in jobs} == {a.pid, b.pid}  # both did work


def test_a_stale_claim_is_taken_over(tmp_path):
    exp = write_experiment(
        tmp_path, factors={"tokenizer": ["direct"]}, run={"stale_after_seconds": 120, "heartbeat_seconds": 1}
    )
    (job,) = build_matrix(exp).jobs
    store = RunStore(tmp_path / "runs", "tiny")
    store.set_status(job.id, "running", epoch=0, epochs=1)
    claim = store.job(job.id).claim
    claim.write_text(json.dumps({"host": "node-that-crashed", "pid": 4242, "nonce": "x"}))
    cli = CliRunner()
    assert "running" in cli.invoke(main, ["status", str(exp), "--runs", str(tmp_path / "runs")]).output
    old = time.time() - 121
    os.utime(claim, (old, old))
    status = cli.invoke(main, ["status", str(exp), "--runs", str(tmp_path / "runs")]).output
    assert "1 interrupted" in status and "to resume" in status
    result = cli.invoke(main, ["run", str(exp), "--runs", str(tmp_path / "runs"), "--workers", "1"])
    assert result.exit_code == 0 and "1 done" in result.output, result.output
    assert not claim.exists()


def test_failed_jobs_show_in_status_and_are_retried_up_to_max_attempts(tmp_path):
    sizes = {"good": {"data.max_events": 2400}, "bad": {"data.max_events": 10}}  # bad: 1 val event, one class
    exp = write_experiment(tmp_path, factors={"tokenizer": ["direct"], "source": sizes}, run={"max_attempts": 2})
    runs = ["--runs", str(tmp_path / "runs")]
    cli = CliRunner()
    first = cli.invoke(main, ["run", str(exp), *runs, "--workers", "1"])
    assert first.exit_code == 1 and "1 done, 1 failed" in first.output
    status = cli.invoke(main, ["status", str(exp), *runs]).output
    assert "1 failed, 1 done" in status
    assert "DataError" in status and "split 'val' has no events of one class" in status and "source" in status
    skipped = cli.invoke(main, ["run", str(exp), *runs])
    assert skipped.exit_code == 0 and "1 done already, 1 failed (use --retry-failed)" in skipped.output
    again = cli.invoke(main, ["run", str(exp), *runs, "--retry-failed", "--workers", "1"])
    assert again.exit_code == 1 and "1 failed" in again.output
    (bad,) = [j for j in build_matrix(exp).jobs if j.levels["source"] == "bad"]
    assert RunStore(tmp_path / "runs", "tiny").status(bad.id)["failures"] == 2
    last = cli.invoke(main, ["run", str(exp), *runs, "--retry-failed"])
    assert last.exit_code == 0 and "1 failed 2 times (run.max_attempts)" in last.output


def test_jobs_sharing_a_tokenizer_fit_it_once_and_later_experiments_reuse_it(tmp_path):
    factors = {"tokenizer": ["direct", "binned_ambre5"], "model.pooling": ["cls", "max"]}
    exp = write_experiment(tmp_path, factors=factors, data=SMALL)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["run", str(exp), "--runs", str(runs), "--workers", "1"])
    assert result.exit_code == 0, result.output
    fits = sorted((runs / "_cache" / "tokenizers").glob("*.json"))
    assert len(fits) == 2  # one per tokenizer, not one per job
    stamps = [f.stat().st_mtime_ns for f in fits]
    store = RunStore(runs, "tiny")
    states = {}
    for job in build_matrix(exp).jobs:
        states.setdefault(job.levels["tokenizer"], set()).add(store.job(job.id).tokenizer.read_text())
    assert all(len(s) == 1 for s in states.values())  # cls and max jobs use the identical fitted state
    assert json.loads(next(iter(states["binned_ambre5"])))["edges"]  # a real fitted state
    (tmp_path / "later").mkdir()
    other = write_experiment(tmp_path / "later", name="later", factors={"tokenizer": ["binned_ambre5"]}, data=SMALL)
    assert CliRunner().invoke(main, ["run", str(other), "--runs", str(runs), "--workers", "1"]).exit_code == 0
    assert [f.stat().st_mtime_ns for f in fits] == stamps and len(list(fits[0].parent.glob("*.json"))) == 2


def test_wandb_offline_run_per_job_with_its_own_levels(tmp_path):
    exp = write_experiment(tmp_path, factors={"tokenizer": ["direct"]}, run={"tracking": "wandb"}, data=SMALL)
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true"}
    result = CliRunner(env=env).invoke(main, ["run", str(exp), "--runs", str(tmp_path / "runs"), "--workers", "1"])
    out = result.output
    assert result.exit_code == 0, (out, result.exception)
    (job,) = build_matrix(exp).jobs
    offline = list((tmp_path / "runs" / "tiny" / job.id / "wandb").glob(f"offline-run-*-{job.id}"))
    assert len(offline) == 1, out
    from wandb.proto import wandb_internal_pb2

    records = []
    for data in leveldb_log_records((offline[0] / f"run-{job.id}.wandb").read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    run = next(r.run for r in records if r.HasField("run"))
    assert run.run_id == job.id and run.run_group == job.cell and list(run.tags) == ["tokenizer=direct"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["epochs"] == 1 and config["levels"] == {"tokenizer": "direct"}
    logged = [r.history for r in records if r.HasField("history")]
    assert logged and {"".join(i.nested_key) or i.key for i in logged[0].item} >= {"epoch", "val_auroc", "train_loss"}


def leveldb_log_records(data: bytes, block: int = 32768) -> list[bytes]:
    """The records of a .wandb file: a 7-byte ':W&B' header, then the LevelDB log format."""
    assert data[:4] == b":W&B"
    out, pos, partial = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding up to the next block
            pos += block - pos % block if pos % block else 0
        elif kind == 1:
            out.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        else:
            out.append(partial + chunk)
    return out
