"""The executor contract: one suite that every way of running a matrix passes (as optuna tests every storage).

Executors, each a small adapter below:
  local    `expmatrix run --workers 1`: the runner trains the jobs in its own process
  pool     `expmatrix run --workers 2`: a process pool
  condor   the rendered DAG of `expmatrix submit --backend condor`, played here as DAGMan would (there are no
           HTCondor daemons): every node's wrapper script once per process with the EXPMATRIX_TASK the submit
           file sets, a process run again while it exits 75 (`retry_until`), a child node only after its parents
  slurm    a real slurmctld/slurmd on localhost (EXPMATRIX_SLURM=1, as tests/executors/test_hpc_slurm.py)

The contract:
  claims   a job claimed by another live owner is left to it (never trained twice); once that owner is
           gone, the job is taken over and trained, once
  resume   a job killed after its first epoch resumes from its checkpoint and ends bitwise as an uninterrupted run
  failure  a failing job is marked failed with its error in status.json, the other jobs finish, and the exit
           status says so: 0 when every job is done, non-zero when one failed
  preempt  a stop signal: the running job checkpoints, its process exits 75 (PREEMPTED_EXIT), and the job
           then resumes from that checkpoint to the uninterrupted result

A new backend is done when its adapter passes this file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_hpc_slurm
from click.testing import CliRunner
from conftest import expmatrix, write_experiment
from test_hpc_slurm import slurm  # noqa: F401 - its local SLURM: the fixture the slurm adapter asks for

from expmatrix.cli import main
from expmatrix.matrix import build_matrix
from expmatrix.states import PREEMPTED_EXIT
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes

REPO = Path(__file__).resolve().parents[2]
COMMAND = f"command=[{sys.executable}, -m, expmatrix]"  # the tasks run this checkout's expmatrix
TASKS = ("--hpc", "cpus=1", "--hpc", "report=false")  # one torch thread, as the local --threads 1 runs; no report

TWO_JOBS = {"factors": {"tokenizer": ["direct"]}, "seeds": [0, 1]}  # one tokenizer fit for both
# epochs of ~0.3 s here: a job can be stopped after its first epoch, long before its last
FOUR_EPOCHS = {
    "model": {"target_params": 20000, "layers": 2, "heads": 4},
    "train": {"epochs": 4, "batch_size": 128, "warmup_steps": 5, "lr": 1e-3},
}


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 600, alive: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while not ready():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"ended (exit {alive.returncode}) before {what}:\n{alive.communicate()[0]}")
        assert time.monotonic() < end, f"waited {timeout} s for {what}"
        time.sleep(0.05)


def job_ids(exp: Path) -> list[str]:
    return [j.id for j in build_matrix(exp).jobs]


def has_checkpoint(store: RunStore, job_id: str) -> Callable[[], bool]:
    return lambda: store.job(job_id).checkpoint.exists()


# ---------------------------------------------------------------- adapters: one per backend


class Executor:
    """How a backend runs a matrix. `log` collects what its processes printed, for failure messages."""

    requeues = False  # the scheduler itself runs a preempted task again (SLURM's batch script requeues it)

    def __init__(self) -> None:
        self.log: list[str] = []

    def run_all(self, exp: Path, runs: Path) -> list[int]:
        """Run every job of `exp` that is not done until none is left to start; the exit statuses of the
        processes it ran (runner, or fit and train tasks; [] when there was nothing to run)."""
        raise NotImplementedError

    def preempt(self, exp: Path, runs: Path, job_id: str) -> int:
        """Start running `exp`; once `job_id` has a checkpoint, send the scheduler's stop signal; the exit
        status of the process that ran `job_id`."""
        raise NotImplementedError


class Local(Executor):
    """`expmatrix run`: in-process (--workers 1) or with a pool; --threads 1 as the reference runs."""

    def __init__(self, workers: int):
        super().__init__()
        self.workers = workers

    def args(self, exp: Path, runs: Path) -> list[str]:
        return ["run", str(exp), "--runs", str(runs), "--workers", str(self.workers), "--threads", "1"]

    def run_all(self, exp: Path, runs: Path) -> list[int]:
        result = CliRunner().invoke(main, self.args(exp, runs))
        self.log.append(result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return [result.exit_code]

    def preempt(self, exp: Path, runs: Path, job_id: str) -> int:
        runner = expmatrix(*self.args(exp, runs))  # a process of its own: the signal must not reach pytest
        wait_for(has_checkpoint(RunStore(runs, "tiny"), job_id), f"a checkpoint of {job_id}", alive=runner)
        runner.send_signal(signal.SIGTERM)
        self.log.append(runner.communicate(timeout=900)[0])
        return runner.returncode


class Condor(Executor):
    """The files of `expmatrix submit --backend condor --dry-run`, run as DAGMan and the schedd would."""

    def submit(self, exp: Path, runs: Path) -> Path | None:
        args = ["submit", str(exp), "--runs", str(runs), "--backend", "condor", "--dry-run"]
        result = CliRunner().invoke(main, [*args, "--hpc", COMMAND, "--hpc", f"templates={REPO / 'hpc'}", *TASKS])
        assert result.exit_code == 0, result.output
        self.log.append(result.output)
        return None if "nothing to submit" in result.output else Path(result.output.strip().splitlines()[-1])

    @staticmethod
    def dag(folder: Path) -> tuple[list[str], dict[str, list[str]], set[str]]:
        """(nodes in order, node -> parents, nodes with a POST script) of experiment.dag."""
        nodes, parents, post = [], {}, set()
        for words in (line.split() for line in (folder / "experiment.dag").read_text().splitlines()):
            if words[:1] == ["JOB"]:
                nodes.append(words[1])
            elif words[:1] == ["PARENT"]:
                cut = words.index("CHILD")
                for child in words[cut + 1 :]:
                    parents.setdefault(child, []).extend(words[1:cut])
            elif words[:2] == ["SCRIPT", "POST"]:
                post.add(words[2])
        return nodes, parents, post

    def process(self, folder: Path, node: str, proc: int) -> subprocess.Popen:
        env = {**os.environ, "EXPMATRIX_TASK": str(proc)}  # environment = "EXPMATRIX_TASK=$(ProcId)"
        return subprocess.Popen([folder / f"{node}.sh"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)  # fmt: skip

    def finish(self, task: subprocess.Popen) -> int:
        self.log.append(task.communicate(timeout=900)[0])
        return task.returncode

    def run_node(self, folder: Path, node: str) -> list[int]:
        """All processes of the node at once; each run again while it exits 75, at most max_retries times."""
        sub = (folder / f"{node}.sub").read_text()
        assert f"retry_until = ExitCode =!= {PREEMPTED_EXIT}" in sub.splitlines()
        retries = int(re.search(r"^max_retries = (\d+)$", sub, re.M).group(1))
        codes = dict.fromkeys(range(len((folder / f"{node}.jobs").read_text().split())), PREEMPTED_EXIT)
        for _ in range(retries + 1):
            again = [proc for proc, code in codes.items() if code == PREEMPTED_EXIT]
            for proc, task in [(proc, self.process(folder, node, proc)) for proc in again]:
                codes[proc] = self.finish(task)
        return list(codes.values())

    def play(self, folder: Path, skip: tuple[str, ...] = ()) -> list[int]:
        """Every node whose parents succeeded, in the DAG's order; a node succeeds when all its processes
        exit 0 or it has a POST script (the template's `/bin/true`)."""
        nodes, parents, post = self.dag(folder)
        succeeded, codes = set(), []
        for node in nodes:
            if node in skip or not all(p in succeeded for p in parents.get(node, [])):
                continue
            node_codes = self.run_node(folder, node)
            codes += node_codes
            if node in post or not any(node_codes):
                succeeded.add(node)
        return codes

    def run_all(self, exp: Path, runs: Path) -> list[int]:
        folder = self.submit(exp, runs)
        return [] if folder is None else self.play(folder)

    def preempt(self, exp: Path, runs: Path, job_id: str) -> int:
        folder = self.submit(exp, runs)
        self.play(folder, skip=("train",))  # the fits it waits for
        ids = (folder / "train.jobs").read_text().split()
        tasks = [self.process(folder, "train", proc) for proc in range(len(ids))]
        mine = tasks[ids.index(job_id)]
        wait_for(has_checkpoint(RunStore(runs, "tiny"), job_id), f"a checkpoint of {job_id}", alive=mine)
        mine.send_signal(signal.SIGTERM)  # kill_sig = SIGTERM (eviction, condor_vacate); train.sh exec'd the worker
        return [self.finish(task) for task in tasks][ids.index(job_id)]


class Slurm(Executor):
    """`expmatrix submit --backend slurm` to the local cluster, then wait until its queue drains."""

    requeues = True

    def __init__(self, cluster):
        super().__init__()
        self.cluster = cluster

    def submit(self, exp: Path, runs: Path) -> dict[str, str]:
        out = test_hpc_slurm.submit(self.cluster, exp, runs, *TASKS)
        self.log.append(out)
        if "submitted: " not in out:
            return {}  # nothing to submit
        return dict(part.split() for part in out.split("submitted: ")[1].strip().split(", "))

    def exit_codes(self, arrays: dict[str, str], tasks: int) -> list[int]:
        """ExitCode of every finished task of these arrays (jobcomp records; 128 + n for a signal n). slurmctld
        writes a record after the task has left the queue: wait until all `tasks` have one."""
        end = time.monotonic() + 120
        while True:
            codes = []
            for line in self.cluster.finished_jobs().splitlines():
                array = re.search(r"ArrayJobId=(\d+) ", line)
                code = re.search(r"\bExitCode=(\d+):(\d+)", line)
                if array and array.group(1) in arrays.values() and code:
                    status, signum = map(int, code.groups())
                    codes.append(128 + signum if signum else status)
            if len(codes) >= tasks or time.monotonic() > end:
                return codes
            time.sleep(0.5)

    def run_all(self, exp: Path, runs: Path) -> list[int]:
        test_hpc_slurm.wait_drained(self.cluster, 300)  # what is queued (a requeued task) finishes first
        arrays = self.submit(exp, runs)
        test_hpc_slurm.wait_drained(self.cluster, 300)
        counts = re.search(r"arrays: (.*) tasks", self.log[-1])  # "arrays: fit 2, train 2 tasks"
        return self.exit_codes(arrays, sum(map(int, re.findall(r"\d+", counts.group(1)))) if counts else 0)

    def preempt(self, exp: Path, runs: Path, job_id: str) -> int:
        arrays = self.submit(exp, runs)
        folder = next((runs / "tiny" / "_submit").glob("slurm-*"))
        task = (folder / "train.jobs").read_text().split().index(job_id)
        wait_for(has_checkpoint(RunStore(runs, "tiny"), job_id), f"a checkpoint of {job_id}", timeout=600)
        target = f"{arrays['train']}_{task}"
        subprocess.run(["scancel", "--batch", "--signal=USR1", target], env=self.cluster.env, check=True)
        log = folder / "logs" / f"train-{arrays['train']}_{task}.out"
        said = re.compile(rf"task {task} preempted \(exit (\d+)\)")
        wait_for(lambda: log.exists() and said.search(log.read_text()) is not None, "the batch script's verdict")
        return int(said.search(log.read_text()).group(1))


ADAPTERS: dict[str, Callable[[pytest.FixtureRequest], Executor]] = {
    "local": lambda request: Local(workers=1),
    "pool": lambda request: Local(workers=2),
    "condor": lambda request: Condor(),
    "slurm": lambda request: Slurm(request.getfixturevalue("slurm")),
}
REASON = test_hpc_slurm.REASON
NEEDS_SLURM = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@pytest.fixture(params=[pytest.param(name, marks=NEEDS_SLURM if name == "slurm" else ()) for name in ADAPTERS])
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
    """The final metrics of the FOUR_EPOCHS jobs, run once without interruption."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    exp = write_experiment(folder, base=FOUR_EPOCHS, **TWO_JOBS)
    run = run_here(exp, folder / "runs")
    assert run.wait(timeout=900) == 0, run.communicate()[0]
    return {job_id: final(folder / "runs", job_id) for job_id in job_ids(exp)}


@pytest.fixture(scope="module")
def killed_after_first_epoch(tmp_path_factory) -> Path:
    """A folder with the FOUR_EPOCHS experiment and its runs/, as a run killed (SIGKILL, no word) halfway
    through the first job's 2nd checkpoint left them: that job is at epoch 1, the other one not started."""
    folder = tmp_path_factory.mktemp("killed")
    exp, runs = write_experiment(folder, base=FOUR_EPOCHS, **TWO_JOBS), folder / "runs"
    killed = run_here(exp, runs, env={"EXPMATRIX_CRASH_WRITE": "checkpoint.pt:2"})
    out = killed.communicate(timeout=900)[0]
    first, second = job_ids(exp)
    store = RunStore(runs, "tiny")
    assert killed.returncode == -signal.SIGKILL, out
    assert store.state(first) == "interrupted" and store.status(first)["epoch"] == 1
    assert store.state(second) == "new"
    return folder


# ---------------------------------------------------------------- the contract


def test_a_job_claimed_by_a_live_owner_is_left_to_it_and_taken_over_once_that_owner_is_gone(executor, tmp_path):
    exp, runs = write_experiment(tmp_path, **TWO_JOBS), tmp_path / "runs"
    claimed, other = job_ids(exp)
    store = RunStore(runs, "tiny")
    owner = subprocess.Popen(["sleep", "600"])  # another runner on this host, alive
    try:
        claim = store.job(claimed).claim
        claim.parent.mkdir(parents=True)
        claim.write_text(json.dumps({"host": socket.gethostname(), "pid": owner.pid, "nonce": "theirs"}))
        codes = executor.run_all(exp, runs)
        assert codes and set(codes) == {0}, executor.log
        assert store.state(other) == "done" and len(store.starts(other)) == 1
        assert store.starts(claimed) == [] and store.state(claimed) == "new"  # not started, not failed
        assert json.loads(claim.read_text())["nonce"] == "theirs"  # the claim is still its owner's
    finally:
        owner.kill()
        owner.wait()
    codes = executor.run_all(exp, runs)  # its owner died without finishing it: the claim is abandoned
    assert codes and set(codes) == {0}, executor.log
    assert store.state(claimed) == "done" and len(store.starts(claimed)) == 1
    assert len(store.starts(other)) == 1 and not claim.exists()


def test_a_job_killed_after_its_first_epoch_resumes_to_the_uninterrupted_result(
    executor, tmp_path, uninterrupted, killed_after_first_epoch
):
    shutil.copytree(killed_after_first_epoch, tmp_path, dirs_exist_ok=True)
    exp, runs = tmp_path / "tiny.yaml", tmp_path / "runs"
    first, second = job_ids(exp)
    store = RunStore(runs, "tiny")
    assert store.state(first) == "interrupted" and store.job(first).checkpoint.exists()
    codes = executor.run_all(exp, runs)
    assert codes and set(codes) == {0}, executor.log
    assert [s["resumed"] for s in store.starts(first)] == [False, True]  # went on from the epoch-1 checkpoint
    assert [s["resumed"] for s in store.starts(second)] == [False]
    assert {j: final(runs, j) for j in (first, second)} == uninterrupted  # bitwise, epoch by epoch


def test_a_failing_job_is_recorded_failed_and_the_others_finish(executor, tmp_path):
    lr = {"fine": {"train.lr": 1e-3}, "diverges": {"train.lr": 1e30}}  # the loss is NaN at the 2nd batch
    exp, runs = write_experiment(tmp_path, factors={"tokenizer": ["direct"], "lr": lr}), tmp_path / "runs"
    fine, diverges = (j.id for j in sorted(build_matrix(exp).jobs, key=lambda j: j.levels["lr"] != "fine"))
    codes = executor.run_all(exp, runs)
    store = RunStore(runs, "tiny")
    assert store.state(fine) == "done", executor.log
    status = store.status(diverges)
    assert status["state"] == "failed" and status["error"].startswith("NonFiniteLoss: loss is nan at epoch 1, batch ")
    assert status["failures"] == 1 and "NonFiniteLoss" in status["traceback"]
    assert any(codes) and PREEMPTED_EXIT not in codes, (codes, executor.log)  # someone says it failed


# Known breaches of the contract, by executor: the test runs and must fail (strict) until they are fixed.
KNOWN: dict[tuple[str, str], str] = {}


def known_breach(request, clause: str) -> None:
    reason = KNOWN.get((clause, request.node.callspec.params["executor"]))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


def test_a_job_whose_data_cannot_be_read_is_recorded_failed_and_the_others_finish(executor, tmp_path, request):
    known_breach(request, "data")
    # 10 events leave the validation split one class: an error found when a job reads its data (a dataset
    # missing from the file stops a run before any job: tests/e2e/test_damaged.py)
    sizes = {"good": {"data.max_events": 2400}, "bad": {"data.max_events": 10}}
    exp, runs = write_experiment(tmp_path, factors={"tokenizer": ["direct"], "source": sizes}), tmp_path / "runs"
    good, bad = (j.id for j in sorted(build_matrix(exp).jobs, key=lambda j: j.levels["source"] != "good"))
    codes = executor.run_all(exp, runs)
    store = RunStore(runs, "tiny")
    status = store.status(bad)
    assert status["state"] == "failed", (status, executor.log)
    assert status["error"].startswith("DataError: ") and "split 'val' has no events of one class" in status["error"]
    assert store.state(good) == "done", executor.log
    assert any(codes), (codes, executor.log)


def test_a_stopped_job_exits_75_and_resumes_from_its_checkpoint_to_the_uninterrupted_result(
    executor, tmp_path, uninterrupted
):
    exp, runs = write_experiment(tmp_path, base=FOUR_EPOCHS, **TWO_JOBS), tmp_path / "runs"
    first, second = job_ids(exp)
    store = RunStore(runs, "tiny")
    assert executor.preempt(exp, runs, first) == PREEMPTED_EXIT, executor.log
    if not executor.requeues:
        assert store.state(first) == "preempted" and 1 <= store.status(first)["epoch"] < 4, store.status(first)
    assert store.job(first).checkpoint.exists()

    codes = executor.run_all(exp, runs)  # (SLURM requeued the task itself: then nothing is left to run)
    assert set(codes) <= {0}, executor.log
    assert [s["resumed"] for s in store.starts(first)] == [False, True]
    assert {j: final(runs, j) for j in (first, second)} == uninterrupted


def test_the_adapters_play_the_dag_as_dagman_would(tmp_path):
    """The condor adapter itself: node order, parents and POST scripts read from a rendered DAG."""
    exp, runs = write_experiment(tmp_path), tmp_path / "runs"
    args = ["submit", str(exp), "--runs", str(runs), "--backend", "condor", "--dry-run", "--hpc", COMMAND]
    result = CliRunner().invoke(main, [*args, "--hpc", f"templates={REPO / 'hpc'}"])
    assert result.exit_code == 0, result.output
    nodes, parents, post = Condor.dag(Path(result.output.strip().splitlines()[-1]))
    assert nodes == ["fit", "train", "report"] and parents == {"train": ["fit"], "report": ["train"]}
    assert post == {"train"}
