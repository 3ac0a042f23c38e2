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
from click.testing import CliRunner
from conftest import write_experiment

from expmatrix.cli import main
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


# expmatrix.stop handles its three signals with one handler (only the name in the messages differs), so two
# runners cover them: in-process with SIGINT (which Python would otherwise turn into KeyboardInterrupt) and a
# pool's runner with SIGUSR1 (SLURM's warning). SIGTERM, in-process and at a pool's runner, is
# tests/executors/test_contract.py's preempt test of the local and pool executors (a runner process of its own:
# exit 75, the job checkpointed and resumed bitwise); a SIGTERM case here would add no path, only ~20 s of CPU.
@pytest.mark.parametrize(
    ("workers", "sig"), [(1, signal.SIGINT), (2, signal.SIGUSR1)], ids=["in-process-SIGINT", "pool-SIGUSR1"]
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

    # the next run takes them first: they are resumable, with their checkpoints (`plan` here: no process to start)
    plan = CliRunner().invoke(main, ["plan", *cmd[4:7]])
    assert f"{workers} preempted" in plan.output, plan.output
