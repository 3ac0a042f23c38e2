"""The executor contract: one suite that every way of running a matrix passes (as optuna tests every storage).

Executors, each a small adapter in tests/executors/adapters.py:
  local    `expmatrix run --workers 1`: the runner trains the jobs in its own process
  pool     `expmatrix run --workers 2`: a process pool
  condor   the rendered DAG of `expmatrix submit --backend condor`, played here as DAGMan would (there are no
           HTCondor daemons): every process of a node with the EXPMATRIX_TASK the submit file sets (the wrapper
           scripts themselves where a task is preempted; elsewhere their `exec` line, in the test's process),
           a process run again while it exits 75 (`retry_until`), a child node only after its parents
  slurm    a real slurmctld/slurmd on localhost (EXPMATRIX_SLURM=1, as tests/executors/test_hpc_slurm.py)

The contract:
  claims   a job claimed by another live owner is left to it (never trained twice); once that owner is
           gone, the job is taken over and trained, once
  resume   a job killed after its first epoch resumes from its checkpoint and ends bitwise as an uninterrupted run
  failure  a failing job (a diverging loss, data that cannot be used) is marked failed with its error in
           status.json, the other jobs finish, and the exit status says so: 0 when every job is done, non-zero
           when one failed
  preempt  a stop signal: the running job checkpoints, its process exits 75 (PREEMPTED_EXIT), and the job
           then resumes from that checkpoint to the uninterrupted result

Every executor run starts processes (~6 s of CPU each), so clauses share a matrix: resume, preempt and claims
are three jobs of one (killed, stopped, claimed: each run of it checks all three), and both kinds of failure
are jobs of another.

A new backend is done when its adapter passes this file.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import test_hpc_slurm
from adapters import ADAPTERS, COMMAND, REPO, Condor, Executor, Local
from click.testing import CliRunner
from conftest import expmatrix, write_experiment

from expmatrix.cli import main
from expmatrix.matrix import build_matrix
from expmatrix.states import PREEMPTED_EXIT
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes

THREE_JOBS = {"factors": {"tokenizer": ["direct"]}, "seeds": [0, 1, 2]}  # one tokenizer fit for all
# epochs of ~0.4 s here; a job to be stopped is frozen (SIGSTOP) at its first checkpoint, so it is always stopped
# before its last epoch, however fast or loaded the machine is
THREE_EPOCHS = {
    "model": {"target_params": 20000, "layers": 2, "heads": 4},
    "train": {"epochs": 3, "batch_size": 128, "warmup_steps": 5, "lr": 1e-3},
}


def job_ids(exp: Path) -> list[str]:
    return [j.id for j in build_matrix(exp).jobs]


REASON = test_hpc_slurm.REASON
NEEDS_SLURM = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


EXECUTORS = [pytest.param(name, marks=NEEDS_SLURM if name == "slurm" else ()) for name in ADAPTERS]


@pytest.fixture(params=EXECUTORS)
def executor(request) -> Executor:
    return ADAPTERS[request.param](request)


# ---------------------------------------------------------------- results to compare with


def final(runs: Path, job_id: str) -> dict:
    store = RunStore(runs, "tiny")
    metrics = json.loads(store.job(job_id).metrics.read_text())
    history = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in store.job(job_id).history.read_text().splitlines()]  # fmt: skip
    return {"test": metrics["test"], "val": metrics["val"], "epochs": metrics["epochs"], "history": history}


def run_here(exp: Path, runs: Path, env: dict | None = None) -> subprocess.Popen:
    """`expmatrix run` in a process of its own, one job after another, one thread (as every adapter)."""
    return expmatrix("run", str(exp), "--runs", str(runs), "--workers", "1", "--threads", "1", env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, dict]:
    """The final metrics of the THREE_EPOCHS jobs, run once without interruption (here, in this process: the
    local executor's results equal those of a runner process bitwise, as its resume test shows)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    exp, local = write_experiment(folder, base=THREE_EPOCHS, **THREE_JOBS), Local(workers=1)
    assert local.run_all(exp, folder / "runs") == [0], local.log
    return {job_id: final(folder / "runs", job_id) for job_id in job_ids(exp)}


@pytest.fixture(scope="module")
def killed_after_first_epoch(tmp_path_factory) -> Path:
    """A folder with the THREE_EPOCHS experiment and its runs/, as a run killed (SIGKILL, no word) halfway
    through the first job's 2nd checkpoint left them: that job is at epoch 1, the others not started."""
    folder = tmp_path_factory.mktemp("killed")
    exp, runs = write_experiment(folder, base=THREE_EPOCHS, **THREE_JOBS), folder / "runs"
    killed = run_here(exp, runs, env={"EXPMATRIX_CRASH_WRITE": "checkpoint.pt:2"})
    out = killed.communicate(timeout=900)[0]
    first, *others = job_ids(exp)
    store = RunStore(runs, "tiny")
    assert killed.returncode == -signal.SIGKILL, out
    assert store.state(first) == "interrupted" and store.status(first)["epoch"] == 1
    assert all(store.state(j) == "new" for j in others)
    return folder


# ---------------------------------------------------------------- the contract

# Known breaches of the contract, by executor: the test runs and must fail (strict) until they are fixed.
KNOWN: dict[tuple[str, str], str] = {}


def known_breach(request, clause: str) -> None:
    reason = KNOWN.get((clause, request.node.callspec.params["executor"]))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


# Not the pool: a pool worker runs the same `run_job` as the local executor, which records a job's failure itself
# and returns "failed" like any other final state, so the pool only carries that word back, as it carries "done"
# and "claimed" in the resume/preempt/claims test below, and the runner's exit status comes from the same
# counts as local's: failure[pool] would repeat failure[local] with two worker processes more (~15 s of CPU).
@pytest.mark.parametrize("executor", [p for p in EXECUTORS if p.values != ("pool",)], indirect=True)
def test_failing_jobs_are_recorded_failed_and_the_others_finish(executor, tmp_path, request):
    known_breach(request, "failure")
    cases = {
        "fine": {"train.lr": 1e-3},
        "diverges": {"train.lr": 1e30},  # the loss is NaN at the 2nd batch
        # 10 events leave the validation split one class: an error found when a job reads its data (a dataset
        # missing from the file stops a run before any job: tests/e2e/test_damaged.py)
        "unreadable": {"data.max_events": 10},
    }
    exp, runs = write_experiment(tmp_path, factors={"tokenizer": ["direct"], "case": cases}), tmp_path / "runs"
    ids = {j.levels["case"]: j.id for j in build_matrix(exp).jobs}
    codes = executor.run_all(exp, runs)
    store = RunStore(runs, "tiny")
    assert store.state(ids["fine"]) == "done", executor.log
    status = store.status(ids["diverges"])
    assert status["state"] == "failed" and status["error"].startswith("NonFiniteLoss: loss is nan at epoch 1, batch ")
    assert status["failures"] == 1 and "NonFiniteLoss" in status["traceback"]
    status = store.status(ids["unreadable"])
    assert status["state"] == "failed", (status, executor.log)
    assert status["error"].startswith("DataError: ") and "split 'val' has no events of one class" in status["error"]
    assert any(codes) and PREEMPTED_EXIT not in codes, (codes, executor.log)  # someone says it failed
    if executor.by_job:  # a process per job (condor, slurm): each failure is said by its own task
        assert executor.by_job[ids["fine"]] == 0, (executor.by_job, executor.log)
        assert all(executor.by_job[ids[c]] not in (0, PREEMPTED_EXIT) for c in ("diverges", "unreadable"))


def test_a_killed_job_resumes_a_stopped_one_exits_75_and_resumes_and_a_claimed_one_waits_for_its_owner(
    executor, tmp_path, uninterrupted, killed_after_first_epoch, request
):
    """resume, preempt and claims: all three jobs end bitwise as the uninterrupted run, each trained once."""
    known_breach(request, "resume-preempt-claims")
    shutil.copytree(killed_after_first_epoch, tmp_path, dirs_exist_ok=True)
    exp, runs = tmp_path / "tiny.yaml", tmp_path / "runs"
    killed, claimed, stopped = job_ids(exp)  # a runner meets them in this order
    store = RunStore(runs, "tiny")
    assert store.state(killed) == "interrupted" and store.job(killed).checkpoint.exists()
    owner = subprocess.Popen(["sleep", "600"])  # another runner on this host, alive
    try:
        claim = store.job(claimed).claim
        claim.parent.mkdir(parents=True)
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": owner.pid, "nonce": "theirs"}))
        # the killed job resumes and ends; then the stopped one is stopped mid-training
        code = executor.preempt(exp, runs, stopped, first=lambda: store.state(killed) == "done")
        assert code == PREEMPTED_EXIT, executor.log
        assert [s["resumed"] for s in store.starts(killed)] == [False, True]  # went on from the epoch-1 checkpoint
        if not executor.requeues:
            status = store.status(stopped)
            assert status["state"] == "preempted" and 1 <= status["epoch"] < 3, status
        assert store.job(stopped).checkpoint.exists()

        # the stopped job resumes (SLURM requeued its task itself: then it is done already); the claimed one is left
        codes = executor.run_all(exp, runs)
        assert codes and set(codes) == {0}, executor.log  # leaving a job to its live owner is no failure
        assert store.state(stopped) == "done" and [s["resumed"] for s in store.starts(stopped)] == [False, True]
        assert store.starts(claimed) == [] and store.state(claimed) == "new"  # not started, not failed
        assert json.loads(claim.read_text())["nonce"] == "theirs"  # the claim is still its owner's
    finally:
        owner.kill()
        owner.wait()
    codes = executor.run_all(exp, runs)  # its owner died without finishing it: the claim is abandoned
    assert codes and set(codes) == {0}, executor.log
    assert store.state(claimed) == "done" and len(store.starts(claimed)) == 1 and not claim.exists()
    assert len(store.starts(killed)) == len(store.starts(stopped)) == 2
    assert {j: final(runs, j) for j in (killed, claimed, stopped)} == uninterrupted  # bitwise, epoch by epoch


def test_the_adapters_play_the_dag_as_dagman_would(tmp_path):
    """The condor adapter itself: node order, parents and POST scripts read from a rendered DAG."""
    exp, runs = write_experiment(tmp_path), tmp_path / "runs"
    args = ["submit", str(exp), "--runs", str(runs), "--backend", "condor", "--dry-run", "--hpc", COMMAND]
    result = CliRunner().invoke(main, [*args, "--hpc", f"templates={REPO / 'hpc'}"])
    assert result.exit_code == 0, result.output
    nodes, parents, post = Condor.dag(Path(result.output.strip().splitlines()[-1]))
    assert nodes == ["fit", "train", "report"] and parents == {"train": ["fit"], "report": ["train"]}
    assert post == {"train"}
