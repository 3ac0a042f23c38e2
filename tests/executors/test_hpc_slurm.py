"""`expmatrix submit --backend slurm` against a real slurmctld/slurmd on localhost (Debian's packages).

Runs when EXPMATRIX_SLURM=1 (`.ci/run` installs SLURM and sets it) and the daemons can start here;
otherwise skipped with the reason. Two cores: arrays run two tasks at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_experiment
from slurm_cluster import LocalSlurm, available

from expmatrix.cli import main
from expmatrix.store import RunStore

REASON = available() if os.environ.get("EXPMATRIX_SLURM") == "1" else "set EXPMATRIX_SLURM=1 (done by .ci/run)"
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

REPO = Path(__file__).resolve().parents[2]
COMMAND = f"command=[{sys.executable}, -m, expmatrix]"  # the node runs this checkout's expmatrix


def submit(slurm: LocalSlurm, exp: Path, runs: Path, *args: str) -> str:
    """`expmatrix submit --backend slurm`, here (sbatch is the process: it hands this environment to the jobs)."""
    cmd = ["submit", str(exp), "--runs", str(runs), "--backend", "slurm", "--hpc", COMMAND]
    cmd += ["--hpc", f"templates={REPO / 'hpc'}", "--hpc", "memory=200M", *args]
    result = CliRunner(env={"SLURM_CONF": str(slurm.conf)}).invoke(main, cmd)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


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
    wait_drained(slurm, 900)  # only catches a hang: the other tests load the machine meanwhile

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
    assert finished.count(f"ArrayJobId={fit_id} ") == 2
    ours = [line for line in finished.splitlines() if any(f"JobId={i} " in line for i in ids.values())]
    assert len(ours) == 7 and not any("JobState=FAILED" in line for line in ours)  # (the cluster is the session's)
    assert len(list((runs / "_cache" / "tokenizers").glob("*.json"))) == 2  # fitted once each, by the fit array

    again = submit(slurm, exp, runs)
    assert "nothing to submit: 4 done already" in again
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    queue = CliRunner().invoke(main, ["queue", str(exp), "--runs", str(runs)])
    assert queue.exit_code == 0 and queue.output.splitlines()[-1] == "4 done", queue.output
