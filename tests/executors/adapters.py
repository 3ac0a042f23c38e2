"""The backend adapters of the executor contract (tests/executors/test_contract.py): one class per way of
running a matrix, and the helpers that stop a job's process at a point of the test's choosing."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_hpc_slurm
from click.testing import CliRunner
from conftest import expmatrix

from expmatrix.cli import main
from expmatrix.states import PREEMPTED_EXIT
from expmatrix.stop import STOP_SIGNALS
from expmatrix.store import RunStore

REPO = Path(__file__).resolve().parents[2]
COMMAND = f"command=[{sys.executable}, -m, expmatrix]"  # the tasks run this checkout's expmatrix
TASKS = ("--hpc", "cpus=1", "--hpc", "report=false")  # one torch thread, as the local --threads 1 runs; no report


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 600, alive: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while not ready():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"ended (exit {alive.returncode}) before {what}:\n{alive.communicate()[0]}")
        assert time.monotonic() < end, f"waited {timeout} s for {what}"
        time.sleep(0.05)


def signal_pending(pid: int, sig: int | None = None) -> bool:
    """`sig` (default: any stop signal) waits in the (stopped) process `pid`: /proc/<pid>/status SigPnd or ShdPnd."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in lines if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (s - 1) & 1 for mask in masks for s in ([sig] if sig else STOP_SIGNALS))


def trained_an_epoch(store: RunStore, job_id: str) -> int | None:
    """The pid of the process training `job_id` once the job has recorded an epoch (after its checkpoint)."""
    claim = store.claims.info(job_id)
    try:
        status = json.loads(store.job(job_id).status.read_text())
    except (OSError, ValueError):  # not written yet
        return None
    return claim["pid"] if claim and "pid" in claim and status.get("epoch", 0) >= 1 else None


def freeze_after_first_epoch(store: RunStore, job_id: str, alive: subprocess.Popen | None = None) -> int:
    """SIGSTOP the process training `job_id` (its claim's pid) as soon as the job has recorded its first epoch
    (and so has its checkpoint); its pid. Frozen, the job is still mid-training when a stop signal comes,
    however fast or loaded the machine is."""
    frozen: list[int] = []

    def freeze() -> bool:
        if (pid := trained_an_epoch(store, job_id)) is not None:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        return bool(frozen)

    wait_for(freeze, f"the first epoch of {job_id}", alive=alive)
    # SIGSTOP takes effect asynchronously: a stop signal sent before it has (SIGTERM, 15, is taken before
    # SIGSTOP, 19) would be handled at once, never seen pending by `thaw_when_signalled`
    wait_for(lambda: Path(f"/proc/{frozen[0]}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", "the freeze")
    return frozen[0]


def thaw_when_signalled(pid: int) -> None:
    """SIGCONT the frozen `pid` once a stop signal (sent to it, or forwarded by its runner) waits in it."""
    wait_for(lambda: signal_pending(pid), f"a stop signal pending in the frozen process {pid}")
    os.kill(pid, signal.SIGCONT)


def run_wrapper_here(wrapper: Path, task: int):
    """The `exec python -m expmatrix ...` line of a rendered wrapper script run in this process (CliRunner), with
    the EXPMATRIX_TASK that HTCondor gives process `task`; the stop-signal handlers that the worker leaves behind
    (it ignores them once its job has ended) are restored."""
    words = shlex.split(wrapper.read_text().splitlines()[-1])
    assert words[:5] == ["exec", sys.executable, "-m", "expmatrix", "worker"], words
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        return CliRunner().invoke(main, words[4:], env={"EXPMATRIX_TASK": str(task)})
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


class Executor:
    """How a backend runs a matrix. `log` collects what its processes printed, for failure messages."""

    requeues = False  # the scheduler itself runs a preempted task again (SLURM's batch script requeues it)

    def __init__(self) -> None:
        self.log: list[str] = []
        self.by_job: dict[str, int] = {}  # exit status of the task that ran each job, where one process runs one

    def run_all(self, exp: Path, runs: Path) -> list[int]:
        """Run every job of `exp` that is not done until none is left to start; the exit statuses of the
        processes it ran (runner, or fit and train tasks; [] when there was nothing to run)."""
        raise NotImplementedError

    def preempt(self, exp: Path, runs: Path, job_id: str, first: Callable[[], bool] = lambda: True) -> int:
        """Start running `exp`; once `job_id` has a checkpoint, freeze its process, wait until `first()` (the
        other jobs got where the test wants them), send the scheduler's stop signal and thaw it; the exit status
        of the process that ran `job_id`."""
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

    def preempt(self, exp: Path, runs: Path, job_id: str, first: Callable[[], bool] = lambda: True) -> int:
        runner = expmatrix(*self.args(exp, runs))  # a process of its own: the signal must not reach pytest
        pid = freeze_after_first_epoch(RunStore(runs, "tiny"), job_id, alive=runner)  # the runner, or its pool worker
        wait_for(first, "the other jobs", alive=runner)
        runner.send_signal(signal.SIGTERM)  # a pool's runner forwards it to its workers
        thaw_when_signalled(pid)
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

    def here(self, folder: Path, node: str, proc: int) -> int:
        """Process `proc` of the node run in this process: the `exec` line of its wrapper, with its EXPMATRIX_TASK."""
        result = run_wrapper_here(folder / f"{node}.sh", proc)
        self.log.append(result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code

    def run_node(self, folder: Path, node: str) -> list[int]:
        """Every process of the node (in this process, one after another: `preempt` runs the wrappers themselves
        as processes, all at once); each run again while it exits 75, at most max_retries times."""
        sub = (folder / f"{node}.sub").read_text()
        assert f"retry_until = ExitCode =!= {PREEMPTED_EXIT}" in sub.splitlines()
        retries = int(re.search(r"^max_retries = (\d+)$", sub, re.M).group(1))
        codes = dict.fromkeys(range(len((folder / f"{node}.jobs").read_text().split())), PREEMPTED_EXIT)
        for _ in range(retries + 1):
            for proc in [proc for proc, code in codes.items() if code == PREEMPTED_EXIT]:
                codes[proc] = self.here(folder, node, proc)
        if node == "train":
            self.by_job.update(zip((folder / "train.jobs").read_text().split(), codes.values(), strict=True))
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

    def preempt(self, exp: Path, runs: Path, job_id: str, first: Callable[[], bool] = lambda: True) -> int:
        folder = self.submit(exp, runs)
        self.play(folder, skip=("train",))  # the fits it waits for
        jobs = (folder / "train.jobs").read_text().split()
        tasks = [self.process(folder, "train", proc) for proc in range(len(jobs))]
        pid = freeze_after_first_epoch(RunStore(runs, "tiny"), job_id)
        wait_for(first, "the other jobs")
        # the task that took the job: its own, or one whose own job was claimed (it goes on in ring order)
        (mine,) = [task for task in tasks if task.pid == pid]  # train.sh exec'd the worker
        mine.send_signal(signal.SIGTERM)  # kill_sig = SIGTERM (eviction, condor_vacate)
        thaw_when_signalled(pid)
        return [self.finish(task) for task in tasks][tasks.index(mine)]


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

    def exit_codes(self, arrays: dict[str, str], tasks: int, jobs: list[str]) -> list[int]:
        """ExitCode of every finished task of these arrays (jobcomp records; 128 + n for a signal n); `by_job`
        gets those of the train array (`jobs`: its train.jobs). slurmctld writes a record after the task has
        left the queue: wait until all `tasks` have one."""
        end = time.monotonic() + 600
        while True:
            codes = []
            for line in self.cluster.finished_jobs().splitlines():
                array = re.search(r"ArrayJobId=(\d+) ", line)
                code = re.search(r"\bExitCode=(\d+):(\d+)", line)
                if array and array.group(1) in arrays.values() and code:
                    status, signum = map(int, code.groups())
                    codes.append(128 + signum if signum else status)
                    task = re.search(r"\bArrayTaskId=(\d+)", line)
                    if array.group(1) == arrays.get("train") and task and int(task.group(1)) < len(jobs):
                        self.by_job[jobs[int(task.group(1))]] = codes[-1]
            if len(codes) >= tasks or time.monotonic() > end:
                return codes
            time.sleep(0.5)

    def run_all(self, exp: Path, runs: Path) -> list[int]:
        test_hpc_slurm.wait_drained(self.cluster, 900)  # what is queued (a requeued task) finishes first
        arrays = self.submit(exp, runs)
        test_hpc_slurm.wait_drained(self.cluster, 900)
        counts = re.search(r"arrays: (.*) tasks", self.log[-1])  # "arrays: fit 2, train 2 tasks"
        if not counts:
            return []
        jobs = []  # the train.jobs of this submission: its folder has the logs of its train array
        for folder in (runs / "tiny" / "_submit").glob("slurm-*"):
            if "train" in arrays and any((folder / "logs").glob(f"train-{arrays['train']}_*")):
                jobs = (folder / "train.jobs").read_text().split()
        return self.exit_codes(arrays, sum(map(int, re.findall(r"\d+", counts.group(1)))), jobs)

    def preempt(self, exp: Path, runs: Path, job_id: str, first: Callable[[], bool] = lambda: True) -> int:
        arrays = self.submit(exp, runs)
        folder = next((runs / "tiny" / "_submit").glob("slurm-*"))
        pid = freeze_after_first_epoch(RunStore(runs, "tiny"), job_id)
        wait_for(first, "the other jobs")
        # the task that took the job: its own, or one whose own job was claimed (it goes on in ring order)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        task = int(next(e for e in environ if e.startswith(b"SLURM_ARRAY_TASK_ID=")).split(b"=")[1])
        target = f"{arrays['train']}_{task}"
        subprocess.run(["scancel", "--batch", "--signal=USR1", target], env=self.cluster.env, check=True)
        thaw_when_signalled(pid)  # the batch script forwarded USR1 to its worker
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
