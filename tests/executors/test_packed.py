"""Packed array tasks (`hpc.jobs_per_task: K`, `submit --jobs-per-task K`): ceil(N / K) tasks, each running K
jobs at once through the same claim, checkpoint and attempts machinery. A failed or killed job does not stop
its neighbours; a stop signal reaches every job of the task, which exits 75, is requeued and resumes each job
bitwise (on the real local SLURM of test_hpc_slurm.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import test_hpc_slurm
from adapters import signal_pending, wait_for
from click.testing import CliRunner
from conftest import write_experiment
from test_contract import THREE_EPOCHS, final
from test_hpc_slurm import attempts, submit, wait_drained

from expmatrix.cli import main
from expmatrix.executors.queue_status import reconcile
from expmatrix.states import PREEMPTED_EXIT
from expmatrix.store import RunStore

REPO = Path(__file__).resolve().parents[2]
COMMAND = f"command=[{sys.executable}, -m, expmatrix]"
THREE_JOBS = {"factors": {"tokenizer": ["direct"]}, "seeds": [0, 1, 2]}


def dry_run(exp: Path, runs: Path, backend: str, *args: str):
    cmd = ["submit", str(exp), "--runs", str(runs), "--backend", backend, "--dry-run", "--hpc", COMMAND]
    return CliRunner().invoke(main, [*cmd, "--hpc", f"templates={REPO / 'hpc'}", *args])


def test_a_packed_submission_has_ceil_n_over_k_tasks_and_tells_the_worker_k(tmp_path):
    exp, runs = write_experiment(tmp_path, **THREE_JOBS), tmp_path / "runs"
    slurm_out = dry_run(exp, runs, "slurm", "--jobs-per-task", "2", "--hpc", "cpus=4")
    assert slurm_out.exit_code == 0, slurm_out.output
    assert "arrays: fit 1, train 2 tasks (train: 3 jobs, 2 per task)" in slurm_out.output
    script = slurm_out.output.split("train.sbatch <==")[1]
    assert "#SBATCH --array=0-1\n" in script and "#SBATCH --cpus-per-task=4\n" in script
    assert " --stage train --threads 4 --jobs-per-task 2 &\n" in script
    assert "--jobs-per-task" not in slurm_out.output.split("fit.sbatch <==")[1].split("==>")[0]  # fits: one each

    htcondor2 = pytest.importorskip("htcondor2")
    condor_out = dry_run(exp, runs, "condor", "--hpc", "jobs_per_task=3")
    assert condor_out.exit_code == 0, condor_out.output
    folder = Path(condor_out.output.strip().splitlines()[-1])
    assert htcondor2.Submit((folder / "train.sub").read_text()).getQArgs() == "1"  # ceil(3 / 3)
    assert htcondor2.Submit((folder / "fit.sub").read_text()).getQArgs() == "1"
    assert (folder / "train.sh").read_text().splitlines()[-1].endswith("--threads 1 --jobs-per-task 3")
    assert len((folder / "train.jobs").read_text().split()) == 3  # the list is unchanged: line N is job N


def test_jobs_per_task_below_one_is_refused_with_its_key(tmp_path):
    exp, runs = write_experiment(tmp_path), tmp_path / "runs"
    result = dry_run(exp, runs, "slurm", "--jobs-per-task", "0")
    assert result.exit_code == 1
    assert "--hpc jobs_per_task: Input should be greater than or equal to 1, got 0" in result.output
    exp = write_experiment(tmp_path, hpc={"jobs_per_task": -2})
    result = dry_run(exp, runs, "condor")
    assert result.exit_code == 1 and f"{exp}: hpc.jobs_per_task: Input should be greater than" in result.output


def test_a_failed_or_killed_job_of_a_packed_task_does_not_stop_its_neighbours(tmp_path):
    kinds = {
        "fine": {"train.lr": 1e-3},
        "diverges": {"train.lr": 1e30},  # NaN at the 2nd batch
        "killed": {"train.epochs": 30, "train.batch_size": 8},  # still training when its process is killed
    }
    data = {"path": "synthetic", "synthetic": {"events": 1500, "seed": 1}}  # 150 val and 150 test events
    exp = write_experiment(tmp_path, factors={"tokenizer": ["direct"], "kind": kinds}, data=data)
    runs = tmp_path / "runs"
    result = dry_run(exp, runs, "condor", "--jobs-per-task", "3", "--hpc", "cpus=2")
    folder = Path(result.output.strip().splitlines()[-1])
    store, ids = RunStore(runs, "tiny"), (folder / "train.jobs").read_text().split()
    by_kind = {store.read_job(j).levels["kind"]: j for j in ids}
    killed = by_kind["killed"]
    task = subprocess.Popen(
        [folder / "train.sh"], env={**os.environ, "EXPMATRIX_TASK": "0"}, stdout=subprocess.PIPE, text=True
    )

    def training() -> bool:
        claim = store.claims.info(killed)
        return claim is not None and "pid" in claim and store.job(killed).checkpoint.exists()

    wait_for(training, "the long job to train", alive=task)
    os.kill(store.claims.info(killed)["pid"], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    out = task.communicate(timeout=900)[0]

    assert task.returncode == 1, out  # failed, not preempted: nothing to requeue
    assert store.state(by_kind["fine"]) == "done", out
    assert store.status(by_kind["diverges"])["error"].startswith("NonFiniteLoss: loss is nan at epoch 1, batch ")
    status = store.status(killed)
    assert status["state"] == "failed", status
    assert status["error"].startswith(f"worker process killed by SIGKILL (out of memory?) (job {killed} on ")
    assert [a["state"] for a in attempts(store, killed)] == ["failed"]
    assert {a["task"] for j in ids for a in attempts(store, j)} == {0}  # one task ran all three
    states = {"fine": "done", "diverges": "failed", "killed": "failed"}
    assert {f"train task (env): job {by_kind[k]}: {s}" for k, s in states.items()} <= set(out.splitlines()), out


# ---------------------------------------------------------------- on the real local SLURM


@pytest.mark.slurm
@pytest.mark.skipif(test_hpc_slurm.REASON is not None, reason=str(test_hpc_slurm.REASON))
def test_a_stopped_packed_task_is_requeued_and_resumes_every_job_bitwise(slurm, tmp_path, monkeypatch):
    exp = write_experiment(tmp_path, base=THREE_EPOCHS, **THREE_JOBS)
    ref, runs = tmp_path / "reference", tmp_path / "runs"
    out = submit(slurm, exp, runs, "--jobs-per-task", "2", "--hpc", "cpus=2", "--hpc", "report=false")
    assert "arrays: fit 1, train 2 tasks (train: 3 jobs, 2 per task)" in out, out
    train = dict(part.split() for part in out.split("submitted: ")[1].strip().split(", "))["train"]
    folder = next((runs / "tiny" / "_submit").glob("slurm-*"))
    ids, store = (folder / "train.jobs").read_text().split(), RunStore(runs, "tiny")
    packed = ids[:2]  # task 0

    # Freeze each job of task 0 (SIGSTOP) once it has written a checkpoint, so that the stop signal finds both
    # mid-training however fast or loaded the machine is; then stop the task as SLURM's time-limit warning does.
    frozen: dict[str, int] = {}

    def freeze() -> bool:
        for job_id in packed:
            claim = store.claims.info(job_id)
            if job_id not in frozen and claim and "pid" in claim and store.job(job_id).checkpoint.exists():
                os.kill(claim["pid"], signal.SIGSTOP)
                frozen[job_id] = claim["pid"]
        return len(frozen) == 2

    wait_for(freeze, "a checkpoint of both jobs of task 0", timeout=600)
    assert all(store.status(j)["epoch"] < 3 for j in packed), [store.status(j) for j in packed]
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{train}_0"], env=slurm.env, check=True)
    wait_for(lambda: all(signal_pending(pid, signal.SIGUSR1) for pid in frozen.values()), "USR1 at both jobs")
    for pid in frozen.values():
        os.kill(pid, signal.SIGCONT)
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    seen: list[tuple[str, ...]] = []  # `expmatrix queue`'s verdicts for the two jobs of task 0
    wait_drained(slurm, 900, lambda: seen.append(tuple(row[3] for row in reconcile(store, packed)[0])))
    assert ("requeued", "requeued") in seen, seen  # one array task, both of its jobs

    log = (folder / "logs" / f"train-{train}_0.out").read_text()
    assert f"task 0 preempted (exit {PREEMPTED_EXIT}): requeue 1 of 3" in log, log
    for job_id in packed:
        assert [a["state"] for a in attempts(store, job_id)] == ["preempted", "done"]
        assert [s["resumed"] for s in store.starts(job_id)] == [False, True]  # went on from its checkpoint
    assert [(a["task"], a["state"]) for a in attempts(store, ids[2])] == [(1, "done")]
    # the uninterrupted reference, here (no process to start), one torch thread per job as in the packed tasks
    # (cpus 2 / 2 jobs)
    reference = CliRunner().invoke(main, ["run", str(exp), "--runs", str(ref), "--workers", "1", "--threads", "1"])
    assert reference.exit_code == 0, reference.output
    assert {j: final(runs, j) for j in ids} == {j: final(ref, j) for j in ids}  # bitwise, epoch by epoch
