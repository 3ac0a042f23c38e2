"""`expmatrix submit`: settings, rendering (golden files), quoting, HTCondor files checked by the real
htcondor parser, the worker run as HTCondor would run it, and the batched status parsing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from adapters import run_wrapper_here
from click.testing import CliRunner
from conftest import write_experiment

from expmatrix.cli import main
from expmatrix.config import SpecError
from expmatrix.config.hpc import load_settings, read_profile
from expmatrix.executors.backend import ArrayStage, Plan
from expmatrix.executors.condor import CondorBackend, parse_condor_json, parse_submit_dag
from expmatrix.executors.queue_status import verdict
from expmatrix.executors.render import render
from expmatrix.executors.slots import Interrupted, candidates, stop_on_signals
from expmatrix.executors.slurm import SlurmBackend, parse_sacct, parse_sbatch, parse_squeue
from expmatrix.runfiles import write_json
from expmatrix.states import PREEMPTED_EXIT
from expmatrix.store import RunStore

REPO = Path(__file__).resolve().parents[2]
HPC = REPO / "hpc"
GOLDEN = Path(__file__).parent / "golden" / "hpc"


def finish_elsewhere(store: RunStore, job_id: str) -> None:
    """A job done by another runner: its result, then its state (a `done` without metrics.json is damaged)."""
    write_json(store.job(job_id).metrics, {"test": {"auroc": 0.5}})
    store.set_status(job_id, "done")


def plan_for(profile: str, **settings) -> Plan:
    """A fixed plan with cluster-like paths: rendering must depend on nothing else."""
    s = load_settings([("", read_profile(HPC, profile)), ("", settings)])
    stages = (ArrayStage("train", ("a1", "b2", "c3", "d4")),)
    folder = Path("/cluster/runs/thesis/_submit/x")
    return Plan(Path("/cluster/exp/thesis.yaml"), "thesis", Path("/cluster/runs"), folder, HPC, s, stages,
                ("--profile", "quick"))  # fmt: skip


CASES = {"slurm": (SlurmBackend, "merlin7"), "condor": (CondorBackend, "stoomboot")}


@pytest.mark.parametrize("backend", CASES)
def test_rendered_files_match_the_golden_files_byte_for_byte(backend):
    cls, profile = CASES[backend]
    files = cls().files(plan_for(profile, max_concurrent=2))
    assert files == cls().files(plan_for(profile, max_concurrent=2))  # same inputs, same bytes
    if os.environ.get("EXPMATRIX_UPDATE_GOLDEN") == "1":
        for name, text in files.items():
            (GOLDEN / backend).mkdir(parents=True, exist_ok=True)
            (GOLDEN / backend / name).write_text(text)
    assert sorted(files) == sorted(p.name for p in (GOLDEN / backend).iterdir())
    for name, text in files.items():
        assert text == (GOLDEN / backend / name).read_text(), f"{backend}/{name} differs from its golden file"


def test_slurm_script_carries_the_settings_and_chains_the_report():
    plan = plan_for("merlin7", max_concurrent=2)
    script = SlurmBackend().files(plan)["train.sbatch"]
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu-day", "#SBATCH --gres=gpu:1",
                 "#SBATCH --signal=B:USR1@600", "#SBATCH --time=1-00:00:00", "module load cray-python"):  # fmt: skip
        assert line in script.splitlines()
    assert f'if [ "$rc" -eq {PREEMPTED_EXIT} ]' in script and 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_' in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    commands = SlurmBackend().commands(plan)
    assert commands[1].startswith("sbatch --parsable --dependency=afterany:<train> ")


def test_a_stage_waits_for_the_stage_before_it():
    s = load_settings([])
    stages = (ArrayStage("fit", ("t1",)), ArrayStage("train", ("a1", "b2"), after=("fit",)))
    plan = Plan(Path("/e.yaml"), "e", Path("/r"), Path("/r/e/_submit/x"), HPC, s, stages)
    slurm = SlurmBackend().commands(plan)
    assert [c.split()[2] for c in slurm] == ["/r/e/_submit/x/fit.sbatch", "--dependency=afterok:<fit>",
                                             "--dependency=afterany:<train>"]  # fmt: skip
    dag = CondorBackend().files(plan)["experiment.dag"].splitlines()
    assert "PARENT fit CHILD train" in dag and "PARENT train CHILD report" in dag
    assert "SCRIPT POST train /bin/true" in dag and "SCRIPT POST fit /bin/true" not in dag


def test_every_value_reaches_the_shell_as_the_literal_it_was(tmp_path):
    hostile = "a'b $(touch pwned) `touch pwned2`; rm -rf x"
    s = load_settings([("", {"setup": {"env": {"X": hostile}, "venv": str(tmp_path / "my venv $(x)")}})])
    venv = tmp_path / "my venv $(x)" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text("export ACTIVATED=yes\n")
    script = render(HPC, "setup.sh.j2", {"s": s}) + 'printf "%s|%s" "$X" "$ACTIVATED"'
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert out.stdout == f"{hostile}|yes" and not list(tmp_path.glob("pwned*"))


def test_values_that_cannot_be_quoted_in_a_directive_are_rejected():
    with pytest.raises(SpecError, match=r"^partition: .*cannot go into a scheduler directive.*got 'gpu\\n#SBATCH"):
        plan_for("merlin7", partition="gpu\n#SBATCH --account=other")
    plan = replace(plan_for("merlin7"), name="thesis;rm")  # a value no setting checked: the filter refuses it
    with pytest.raises(SpecError, match="'expmatrix-thesis;rm' cannot go into a scheduler directive"):
        SlurmBackend().files(plan)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"cpus": 0}, "cpus: Input should be greater than or equal to 1, got 0"),
        ({"memory": "lots"}, "memory: String should match pattern"),
        ({"partitoin": "gpu"}, "partitoin: unknown key; valid keys: account, backend, command,"),
        ({"partition": "gpu; touch x"}, "partition: Value error, cannot go into a scheduler directive"),
        ({"setup": {"env": {"NOT-A-NAME": "1"}}}, "not a shell variable name"),
        ({"time": "00:05:00", "signal_seconds": 300}, "signal_seconds (300) must be shorter than the time limit"),
    ],
)
def test_bad_settings_name_the_layer_and_key(layer, message):
    with pytest.raises(SpecError, match="^--hpc ") as e:
        load_settings([("--hpc ", layer)])
    assert message in str(e.value)


def test_a_yaml_number_for_the_time_limit_is_seconds():
    assert load_settings([("", {"time": 14400})]).time == "04:00:00"  # unquoted 04:00:00 in YAML
    assert load_settings([("", yaml.safe_load("time: 1-00:00:00"))]).time_seconds() == 86400


def test_settings_layer_profile_then_experiment_then_command_line(tmp_path):
    hpc = {"templates": str(HPC), "cluster": "stoomboot", "cpus": 2, "memory": "8G"}
    exp, runs = write_experiment(tmp_path, hpc=hpc), str(tmp_path / "runs")
    result = CliRunner().invoke(main, ["submit", str(exp), "--runs", runs, "--dry-run", "--hpc", "memory=1G"])
    assert result.exit_code == 0, result.output  # the backend comes from the profile
    sub = result.output.split("train.sub <==")[1]
    for line in ("request_cpus = 2", "request_memory = 1G", "request_gpus = 1", '+UseOS = "el9"'):
        assert line in sub.splitlines()  # experiment over profile, command line over both


def test_a_bad_key_in_the_experiments_hpc_section_names_the_file(tmp_path):
    exp = write_experiment(tmp_path, hpc={"templates": str(HPC), "memroy": "4G"})
    result = CliRunner().invoke(main, ["submit", str(exp), "--runs", str(tmp_path / "runs"), "--backend", "slurm"])
    assert result.exit_code == 1 and f"{exp}: hpc.memroy: unknown key; valid keys: account," in result.output
    assert not (tmp_path / "runs" / "tiny" / "_submit").exists()


# ---------------------------------------------------------------- HTCondor files, read by the real parser


def test_condor_submit_file_expands_to_one_process_per_job():
    htcondor2 = pytest.importorskip("htcondor2")
    files = CondorBackend().files(plan_for("stoomboot", max_concurrent=2))
    text = files["train.sub"]
    assert htcondor2.Submit(text).getQArgs() == "4"
    for proc in range(4):
        sub = htcondor2.Submit(text)
        sub["ProcId"] = str(proc)
        assert sub.expand("environment") == f'"EXPMATRIX_TASK={proc}"'
        assert sub.expand("output") == f"/cluster/runs/thesis/_submit/x/logs/train-1_{proc}.out"  # ClusterId 1 offline
    sub = htcondor2.Submit(text)
    assert (sub["request_gpus"], sub["MY.UseOS"], sub["MY.JobCategory"], sub["getenv"]) == (
        "1",
        '"el9"',
        '"long"',
        "True",
    )
    assert sub["retry_until"] == f"ExitCode =!= {PREEMPTED_EXIT}" and sub["max_materialize"] == "2"
    assert sub["executable"] == "/cluster/runs/thesis/_submit/x/train.sh"
    wrapper = files["train.sh"].splitlines()
    assert wrapper[-1] == (
        "exec expmatrix worker /cluster/exp/thesis.yaml --runs /cluster/runs "
        "--jobs /cluster/runs/thesis/_submit/x/train.jobs --stage train --threads 4"
    )
    assert htcondor2.Submit(files["report.sub"]).getQArgs() == ""  # one job


def test_condor_dag_nodes_are_the_rendered_submit_files_in_order():
    htcondor2 = pytest.importorskip("htcondor2")  # condor_dagman itself is not packaged here: check its nodes
    files = CondorBackend().files(plan_for("stoomboot"))
    lines = [line.split() for line in files["experiment.dag"].splitlines() if line and not line.startswith("#")]
    nodes = {words[1]: words[2] for words in lines if words[0] == "JOB"}
    assert nodes == {"train": "train.sub", "report": "report.sub"}
    for sub in nodes.values():
        htcondor2.Submit(files[sub])  # parses
    assert ["PARENT", "train", "CHILD", "report"] in lines


# ---------------------------------------------------------------- the worker, as the schedulers run it


@pytest.mark.slow
def test_condor_wrapper_runs_its_task_with_the_environment_condor_sets(tmp_path):
    exp, runs = write_experiment(tmp_path, factors={"tokenizer": ["direct", "binned_ambre5"]}), tmp_path / "runs"
    command = f"command=[{sys.executable}, -m, expmatrix]"
    result = CliRunner().invoke(main, ["submit", str(exp), "--runs", str(runs), "--backend", "condor", "--dry-run",
                                       "--hpc", command, "--hpc", f"templates={HPC}"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "condor_submit_dag -batch-name expmatrix-tiny" in result.output
    (folder,) = (runs / "tiny" / "_submit").iterdir()
    jobs, store = (folder / "train.jobs").read_text().split(), RunStore(runs, "tiny")
    finish_elsewhere(store, jobs[0])  # finished elsewhere (a laptop): process 1 is the only one with work

    # the wrapper's command, here, with the environment HTCondor gives process N (the executor contract runs the
    # wrappers themselves as processes: tests/executors/test_contract.py)
    task = run_wrapper_here(folder / "train.sh", 1)
    assert task.exit_code == 0 and f"task (env): job {jobs[1]}: done" in task.output, task.output
    assert store.state(jobs[1]) == "done" and '"task": 1' in store.job(jobs[1]).attempts.read_text()
    late = run_wrapper_here(folder / "train.sh", 0)
    assert late.exit_code == 0 and "job None: nothing" in late.output  # its job is done and no other is new


def test_a_task_takes_the_next_waiting_job_when_its_own_is_done(tmp_path):
    store = RunStore(tmp_path, "e")
    for job_id, state in {"a": "done", "b": "new", "c": "failed", "d": "preempted", "e": "done"}.items():
        if state == "done":
            finish_elsewhere(store, job_id)
        elif state != "new":
            store.set_status(job_id, state)
    ids = ["a", "b", "c", "d", "e"]
    assert list(candidates(ids, 0, store)) == ["b", "d"]  # own job done: the waiting ones, in ring order
    assert list(candidates(ids, 2, store)) == ["c", "d", "b"]  # its own failed job first (a retry), not others'
    with pytest.raises(SpecError, match=r"task 5 is outside the job list \(0..4\)"):
        list(candidates(ids, 5, store))


def test_the_worker_without_a_task_index_says_how_to_give_one(tmp_path, monkeypatch):
    exp = write_experiment(tmp_path)
    (tmp_path / "jobs").write_text("abc\n")
    for name in ("EXPMATRIX_TASK", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["worker", str(exp), "--jobs", str(tmp_path / "jobs"), "--runs", str(tmp_path)])
    assert result.exit_code == 1 and "no task index: pass --task N or set one of EXPMATRIX_TASK" in result.output


def test_submit_fits_tokenizers_first_skips_done_jobs_and_retries_failed_ones(tmp_path):
    exp, runs = write_experiment(tmp_path, seeds=[0, 1]), tmp_path / "runs"
    args = ["submit", str(exp), "--runs", str(runs), "--backend", "slurm", "--dry-run", "--hpc", f"templates={HPC}"]
    first = CliRunner().invoke(main, args)
    assert "arrays: fit 2, train 4 tasks\n" in first.output  # 2 tokenizers to fit, then 2 x 2 seeds to train
    assert "#SBATCH --array=0-1\n" in first.output and "#SBATCH --array=0-3\n" in first.output
    assert "sbatch --parsable --dependency=afterok:<fit> " in first.output
    folder = next((runs / "tiny" / "_submit").iterdir())
    jobs, fits = ((folder / f"{s}.jobs").read_text().split() for s in ("train", "fit"))
    assert set(fits) < set(jobs) and len(fits) == 2
    store = RunStore(runs, "tiny")
    finish_elsewhere(store, jobs[0])
    store.set_status(jobs[1], "failed", error="boom", failures=1)
    second = CliRunner().invoke(main, args)
    assert "train 2 tasks (left alone: 1 done already, 1 failed (use --retry-failed))" in second.output
    retry = CliRunner().invoke(main, [*args, "--retry-failed"])
    assert "train 3 tasks (left alone: 1 done already)" in retry.output  # as `expmatrix run --retry-failed`
    folders = (runs / "tiny" / "_submit").iterdir()
    trains = sorted(((f / "train.jobs").read_text().split() for f in folders), key=len)
    assert [len(t) for t in trains] == [2, 3, 4]  # one folder per distinct submission
    assert jobs[0] not in trains[0] + trains[1]


# ---------------------------------------------------------------- scheduler output, parsed in one pass


def test_squeue_and_sacct_lines_become_task_states():
    squeue = "812_0|RUNNING|None\n812_1|PENDING|BeginTime\n812_2|PENDING|JobArrayTaskLimit\n813|PENDING|Dependency\n"
    assert parse_squeue(squeue) == {
        ("812", 0): "RUNNING",
        ("812", 1): "REQUEUED",  # a requeued task waits for its begin time
        ("812", 2): "PENDING",
        ("813", 0): "PENDING",
    }
    sacct = "812_3|COMPLETED\n812_4|CANCELLED by 0\n812_5|TIMEOUT\n"
    assert parse_sacct(sacct) == {("812", 3): "COMPLETED", ("812", 4): "CANCELLED", ("812", 5): "TIMEOUT"}
    assert parse_sbatch("4711;cluster\n") == "4711"
    with pytest.raises(RuntimeError, match="sbatch printed no job id"):
        parse_sbatch("sbatch: error: invalid partition\n")


def test_condor_ads_become_task_states():
    ads = """[
      {"DAGManJobId": 90, "DAGNodeName": "train", "ProcId": 0, "JobStatus": 2, "NumJobStarts": 1},
      {"DAGManJobId": 90, "DAGNodeName": "train", "ProcId": 1, "JobStatus": 1, "NumJobStarts": 1},
      {"DAGManJobId": 90, "DAGNodeName": "train", "ProcId": 2, "JobStatus": 1, "NumJobStarts": 0},
      {"DAGManJobId": 90, "DAGNodeName": "train", "ProcId": 3, "JobStatus": 4, "ExitCode": 1},
      {"ClusterId": 90, "ProcId": 0, "JobStatus": 2}
    ]"""
    assert parse_condor_json(ads) == {
        ("90:train", 0): "RUNNING",
        ("90:train", 1): "REQUEUED",
        ("90:train", 2): "IDLE",
        ("90:train", 3): "FAILED",
    }
    assert parse_submit_dag("Submitting job(s).\n1 job(s) submitted to cluster 90.\n") == "90"


@pytest.mark.parametrize(
    ("disk", "scheduler", "expected"),
    [
        ("done", "RUNNING", "done"),  # the files decide done and failed
        ("failed", "", "failed"),
        ("new", "PENDING", "pending"),
        ("preempted", "REQUEUED", "requeued"),
        ("running", "RUNNING", "running"),
        ("running", "", "running"),  # a live claim, e.g. a laptop's run
        ("new", "", "vanished"),  # submitted, forgotten by the scheduler, never finished
        ("preempted", "TIMEOUT", "vanished"),
        ("new", None, "not submitted"),
    ],
)
def test_disk_and_scheduler_states_reconcile(disk, scheduler, expected):
    assert verdict(disk, scheduler) == expected


def test_queue_command_reads_the_submissions_without_a_scheduler_when_none_was_submitted(tmp_path):
    exp = write_experiment(tmp_path)
    result = CliRunner().invoke(main, ["queue", str(exp), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "2 not submitted" in result.output


def test_a_stop_signal_outside_training_ends_the_task_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(Interrupted, match="SIGUSR1"), stop_on_signals():
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)  # the handler raises in this frame long before
    assert signal.getsignal(signal.SIGUSR1) is before
