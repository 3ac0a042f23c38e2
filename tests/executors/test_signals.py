"""A stop signal to `expmatrix run`, in-process and with a pool: every running job checkpoints where it
is and ends preempted, nothing new starts, the runner exits 75 and says how to resume; the next run
resumes the preempted jobs from their checkpoints and finishes the rest."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_experiment

from expmatrix.states import PREEMPTED_EXIT
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes

# Long jobs (thousands of optimizer steps): a job is still training whenever the signal arrives,
# however slow or loaded the machine is; the signal cuts them short, so the test stays quick.
LONG = {
    "model": {"target_params": 20000, "layers": 2, "heads": 4},
    "train": {"epochs": 30, "batch_size": 8, "warmup_steps": 5, "lr": 1e-3},
}


def statuses(runs: Path) -> dict[str, dict]:
    out = {}
    store = RunStore(runs, "tiny")
    for job in store.job_ids():
        with contextlib.suppress(OSError, json.JSONDecodeError):  # not written yet, or being replaced: next time
            out[job] = json.loads(store.job(job).status.read_text())
    return out


def wait_running(runs: Path, n: int, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Until `n` jobs train (their status says running); the time limit only catches a hang."""
    end = time.time() + timeout
    while sum(s["state"] == "running" for s in statuses(runs).values()) < n:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < end, "timed out waiting for jobs to start"
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("workers", "sig"),
    [(1, signal.SIGTERM), (1, signal.SIGINT), (2, signal.SIGTERM), (2, signal.SIGUSR1)],
    ids=["in-process-SIGTERM", "in-process-SIGINT", "pool-SIGTERM", "pool-SIGUSR1"],
)
def test_a_stop_signal_checkpoints_the_running_jobs_and_exits_75(tmp_path, workers, sig):
    seeds = [0, 1, 2] if workers == 1 else [0, 1, 2, 3]  # more jobs than workers: some never start
    exp = write_experiment(tmp_path, base=LONG, seeds=seeds, factors={"tokenizer": ["direct"]})
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "expmatrix", "run", str(exp), "--runs", str(runs), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    wait_running(runs, workers, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=900)

    assert proc.returncode == PREEMPTED_EXIT, out
    assert "Traceback" not in out, out
    name = signal.Signals(sig).name
    assert f"stopped by {name}: {workers} running job(s) checkpointed" in out, out
    assert "run the same command again to resume" in out
    states = statuses(runs)
    preempted = {j: s for j, s in states.items() if s["state"] == "preempted"}
    assert len(preempted) == workers and len(states) == workers, states  # the others never started
    for job, status in preempted.items():
        assert status["reason"].startswith(f"{name} at epoch 1, batch "), status["reason"]  # mid-epoch
        assert RunStore(runs, "tiny").job(job).checkpoint.exists()
        assert not RunStore(runs, "tiny").job(job).claim.exists()  # released: the next run may take it

    # the next run takes them first: they are resumable, with their checkpoints
    plan = subprocess.run([*cmd[:3], "plan", *cmd[4:7]], capture_output=True, text=True, timeout=120)
    assert f"{workers} preempted" in plan.stdout, plan.stdout + plan.stderr
