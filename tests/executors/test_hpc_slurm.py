"""`expmatrix submit --backend slurm` against a real slurmctld/slurmd on localhost (Debian's packages).

Runs when EXPMATRIX_SLURM=1 (`.ci/run` installs SLURM and sets it) and the daemons can start here;
otherwise skipped with the reason. Two cores: arrays run two tasks at a time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import PRESETS, write_experiment
from slurm_cluster import LocalSlurm, available

from expmatrix.cli import main
from expmatrix.executors.queue_status import reconcile
from expmatrix.store import RunStore

REASON = available() if os.environ.get("EXPMATRIX_SLURM") == "1" else "set EXPMATRIX_SLURM=1 (done by .ci/run)"
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

REPO = Path(__file__).resolve().parents[2]
COMMAND = f"command=[{sys.executable}, -m, expmatrix]"  # the node runs this checkout's expmatrix


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


def submit(slurm: LocalSlurm, exp: Path, runs: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "expmatrix", "submit", str(exp), "--runs", str(runs), "--backend", "slurm"]
    cmd += ["--hpc", COMMAND, "--hpc", f"templates={REPO / 'hpc'}", "--hpc", "memory=200M", *args]
    out = subprocess.run(cmd, env=slurm.env, capture_output=True, text=True, cwd=exp.parent)
    assert out.returncode == 0, out.stderr
    return out.stdout


def squeue(slurm: LocalSlurm) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], env=slurm.env, capture_output=True, text=True)
    return [line.split("|") for line in out.stdout.split()]


def wait_drained(slurm: LocalSlurm, seconds: float, on_tick=lambda: None) -> None:
    """Until the queue is empty (a requeued task waits cred_expire, 10 s here, before it starts again)."""
    deadline = time.monotonic() + seconds
    while rows := squeue(slurm):
        assert time.monotonic() < deadline, f"queue not drained after {seconds} s: {rows}\n{slurm.finished_jobs()}"
        on_tick()
        time.sleep(0.5)


def attempts(store: RunStore, job_id: str) -> list[dict]:
    return [json.loads(line) for line in store.job(job_id).attempts.read_text().splitlines()]


def test_an_array_trains_every_job_and_the_report_job_sees_them(slurm, tmp_path, monkeypatch):
    seeds = {"seeds": [0, 1]}  # 2 tokenizers x 2 seeds = 4 jobs, 1 epoch each
    exp, runs = write_experiment(tmp_path, **seeds), tmp_path / "runs"
    out = submit(slurm, exp, runs, "--max-concurrent", "2")
    assert "arrays: fit 2, train 4 tasks" in out  # a tokenizer fit per tokenizer first, then training (afterok)
    ids = dict(part.split() for part in out.split("submitted: ")[1].strip().split(", "))
    fit_id, array_id, report_id = ids["fit"], ids["train"], ids["report"]
    wait_drained(slurm, 150)

    store = RunStore(runs, "tiny")
    jobs = next((runs / "tiny" / "_submit").glob("slurm-*")).joinpath("train.jobs").read_text().split()
    assert len(jobs) == 4 and all(store.state(j) == "done" for j in jobs)
    tasks = sorted(attempts(store, j)[0]["task"] for j in jobs)
    assert tasks == [0, 1, 2, 3]  # each task ran its own job, once
    assert all(a["slurm_array_job_id"] == array_id and a["state"] == "done" for j in jobs for a in attempts(store, j))
    report = (runs / "tiny" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| direct", "| binned_ambre5"))]
    assert len(rows) == 2 and all("| 2 " in row for row in rows), report  # both seeds of both cells seen
    finished = slurm.finished_jobs()
    assert f"JobId={report_id} " in finished and finished.count(f"ArrayJobId={array_id} ") == 4
    assert finished.count(f"ArrayJobId={fit_id} ") == 2 and "JobState=FAILED" not in finished
    assert len(list((runs / "_cache" / "tokenizers").glob("*.json"))) == 2  # fitted once each, by the fit array

    again = submit(slurm, exp, runs)
    assert "nothing to submit: 4 done already" in again
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    queue = CliRunner().invoke(main, ["queue", str(exp), "--runs", str(runs)])
    assert queue.exit_code == 0 and queue.output.splitlines()[-1] == "4 done", queue.output


def long_experiment(folder: Path, epochs: int) -> Path:
    """One job whose training (~1.2 s an epoch on one thread here) outlasts the first warning signal."""
    spec = {
        "name": "long",
        "presets": str(PRESETS),
        "data": {"path": "synthetic", "synthetic": {"events": 3000, "seed": 1}},
        "base": {
            "tokenizer": "direct",
            "model": {"target_params": 20000, "layers": 2, "heads": 4},
            "train": {"epochs": epochs, "batch_size": 64, "warmup_steps": 5, "lr": 1e-3},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "long.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_task_cut_by_its_time_limit_is_requeued_and_ends_as_if_uninterrupted(slurm, tmp_path, monkeypatch):
    # time 1 min, warning 20 s before: SLURM sends USR1 10-40 s after the start (it checks every 30 s);
    # the epochs are chosen from this machine's measured speed so that training takes ~70 s: the first
    # attempt is always cut short, however fast or loaded the machine is.
    probe = long_experiment(tmp_path / "probe", epochs=2)
    assert (
        CliRunner().invoke(main, ["run", str(probe), "--runs", str(tmp_path / "probe"), "--threads", "1"]).exit_code
        == 0
    )
    probed = RunStore(tmp_path / "probe", "long")
    (job,) = probed.job_ids()
    per_epoch = probed.metrics(job)["train_seconds"] / 2
    epochs = max(25, math.ceil(70 / per_epoch))
    exp = long_experiment(tmp_path, epochs=epochs)
    cut, full = tmp_path / "cut", tmp_path / "full"
    limits = ["--hpc", "signal_seconds=20", "--hpc", "report=false"]
    submit(slurm, exp, cut, "--hpc", "time=00:01:00", "--hpc", "max_requeues=6", *limits)
    submit(slurm, exp, full, "--hpc", "time=00:10:00", *limits)
    cut_store, full_store = RunStore(cut, "long"), RunStore(full, "long")
    (job_id,) = cut_store.job_ids()
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    seen = []  # what `expmatrix queue` reports while it runs: one batched squeue per look
    wait_drained(slurm, 480, lambda: seen.append(reconcile(cut_store, [job_id])[0][0][3]))
    assert {"running", "requeued"} <= set(seen), seen
    assert reconcile(cut_store, [job_id])[0][0][3] == "done"

    tries = attempts(cut_store, job_id)
    assert [a["state"] for a in tries] == ["preempted"] * (len(tries) - 1) + ["done"]
    # one task, requeued; a warning that beats Python's start-up kills the worker before it can log an
    # attempt (the script requeues that too), so restart counts may skip but always grow
    restarts = [int(a.get("slurm_restart_count", 0)) for a in tries]
    assert restarts == sorted(set(restarts)) and restarts[-1] >= 1 and {a["task"] for a in tries} == {0}
    assert [a["state"] for a in attempts(full_store, job_id)] == ["done"]
    starts = [json.loads(line) for line in cut_store.job(job_id).starts.read_text().splitlines()]
    assert any(s["resumed"] for s in starts)  # a requeued attempt went on from a checkpoint

    a, b = (json.loads(s.job(job_id).metrics.read_text()) for s in (cut_store, full_store))
    assert a["epochs"] == b["epochs"] == epochs
    assert a["test"] == b["test"] and a["val"] == b["val"]  # bitwise: the resumed run is the uninterrupted one
    history = [
        [
            {k: v for k, v in h.items() if k != "seconds"}
            for h in map(json.loads, s.job(job_id).history.open())
        ]
        for s in (cut_store, full_store)
    ]
    assert history[0] == history[1]
