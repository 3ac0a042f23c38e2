"""Tuning two arms with real optuna journals and real training: concurrent workers, a worker killed by SIGKILL
mid-trial, pruning, the export, the tuned matrix and both reports.

Only what is about processes runs as one (the workers that run at once, the worker that is killed); a worker
that joins later, the export, the runs and the reports run in this process (`work`, CliRunner): each
`python -m expmatrix` costs seconds of imports that prove nothing here."""

from __future__ import annotations

import json
import signal

import optuna
import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from conftest import expmatrix, write_experiment
from optuna.trial import TrialState

from expmatrix.assembly.recipe import Recipe
from expmatrix.cli import main
from expmatrix.store import RunStore
from expmatrix.tuning import Tuning
from expmatrix.tuning.budget import next_trial
from expmatrix.tuning.export import export_best, tuned_matrix
from expmatrix.tuning.journal import locked, open_journal
from expmatrix.tuning.worker import tell, train, work

pytestmark = pytest.mark.slow  # trains, or starts processes

TRIALS = 2  # per arm
TUNE = {
    "objective": {"metric": "val_auroc"},
    "trials": TRIALS,
    "epochs": 2,
    "pruner": "none",
    "space": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}},
}
BASE = {
    "model": {"target_params": 8000, "layers": 2, "heads": 4},
    "train": {"epochs": 1, "batch_size": 256, "warmup_steps": 5, "lr": 1e-3},
}
DATA = {"path": "synthetic", "synthetic": {"events": 1500, "seed": 1}}  # 1200 training events: plenty to rank
TIMEOUT = 300  # seconds: generous, for a loaded 2-core machine


def tune_cli(exp, runs, *args, env=None):
    return expmatrix("tune", str(exp), "--runs", str(runs), *args, env=env)


def finish(proc, code=0) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == code, out
    return out


def cli(*args: str) -> str:
    """`expmatrix ARGS` in this process; its output."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def worker_here(exp, runs) -> str:
    """One more worker, in this process (`tune --worker --threads 1` without the imports); its log."""
    lines: list[str] = []
    states = work(Tuning.load(exp, None, {}, runs), threads=1, log=lines.append)
    return "\n".join([*lines, f"worker here: {dict(states)}"])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, one_thread):
    """Workers A and B at once (processes); A is SIGKILLed halfway through writing its first trial's epoch log
    (after the epoch-1 checkpoint: a fault the store's own crash switch injects); then a fresh worker C (in this
    process) joins B."""
    folder = tmp_path_factory.mktemp("tune")
    exp, runs = write_experiment(folder, base=BASE, tune=TUNE, data=DATA), folder / "runs"
    a = tune_cli(exp, runs, "--worker", "--threads", "1", env={"EXPMATRIX_CRASH_WRITE": "metrics.jsonl:1"})
    b = tune_cli(exp, runs, "--worker", "--threads", "1")
    finish(a, -signal.SIGKILL)
    logs = worker_here(exp, runs)
    logs += finish(b)
    tuning = Tuning.load(exp, None, {}, runs)
    storage = open_journal(tuning.files.journal)
    return exp, runs, tuning, {arm.name: tuning.study(storage, arm) for arm in tuning.arms}, logs


def test_every_arm_gets_its_budget_and_no_job_is_trained_twice(tuned):
    _, _, tuning, studies, logs = tuned
    finished = {name: [t for t in s.trials if t.state == TrialState.COMPLETE] for name, s in studies.items()}
    assert {name: len(ts) for name, ts in finished.items()} == {a.name: TRIALS for a in tuning.arms}, logs
    jobs = [t.user_attrs["job"] for ts in finished.values() for t in ts]
    assert len(set(jobs)) == len(jobs)  # every counted trial a job of its own
    store = tuning.files.trials
    for name, ts in finished.items():
        # the arm's own settings came first (its trial 0, or, if that one was killed, the trial that resumed it:
        # which one finished first depends on the workers' timing) and were trained to the end
        assert studies[name].trials[0].params == {"train.lr": 1e-3} and {"train.lr": 1e-3} in [t.params for t in ts]
        for t in ts:
            assert t.value == store.metrics(t.user_attrs["job"])["val"]["val_auroc"]
            assert store.read_job(t.user_attrs["job"]).levels == tuning.arm_of({"tokenizer": name[10:]}).levels


def test_the_killed_trial_is_given_back_and_its_job_resumed(tuned):
    _, _, tuning, studies, logs = tuned
    stale = [t for s in studies.values() for t in s.trials if t.user_attrs.get("stale")]
    assert len(stale) == 1 and stale[0].state == TrialState.FAIL, logs  # not counted: the budget was given back
    killed = stale[0].user_attrs["job"]
    store = tuning.files.trials
    resumed = [t for s in studies.values() for t in s.trials if t.user_attrs.get("resumes") == stale[0].number]
    assert [(t.state, t.user_attrs["job"]) for t in resumed] == [(TrialState.COMPLETE, killed)]
    assert [s["resumed"] for s in store.starts(killed)] == [False, True]  # resumed from its checkpoint
    assert sorted(resumed[0].intermediate_values) == [1, 2] == [row["epoch"] for row in store.history(killed)]
    others = [j for j in store.job_ids() if j != killed]
    assert others and all(len(store.starts(j)) == 1 for j in others)  # every other job started once


def test_export_then_the_tuned_matrix_and_both_reports(tuned):
    exp, runs, tuning, studies, _ = tuned
    out = cli("tune", exp, "--runs", runs, "--export")
    for arm in tuning.arms:
        best = yaml.safe_load(tuning.files.best_file(arm.name).read_text())
        assert best["settings"] == studies[arm.name].best_params and f"{arm.name}.yaml" in out
        assert best["budget"] == {"trials": TRIALS, "epochs": 2}

    cli("run", exp, "--runs", runs, "--workers", "1", "--threads", "1")  # untuned
    out = cli("run", exp, "--runs", runs, "--tuned", "--workers", "1", "--threads", "1")
    report = (runs / "tiny.tuned" / "report.md").read_text()  # `tune EXP --run` is the same
    assert "the same budget of 2 trials x 2 epochs" in report and "binned_ambre5" in report, out
    assert "Tuned against untuned" in out and "B (tiny.tuned) against A (tiny) over 2 common cells" in out, out
    cells = pl.read_csv(runs / "tiny.tuned" / "against_untuned" / "tables" / "compare_cells.csv")
    assert sorted(cells["tokenizer"]) == ["binned_ambre5", "direct"] and not cells["paired"].any()  # 1 seed each
    tuned = RunStore(runs, "tiny.tuned")
    for record in map(tuned.read_record, tuned.job_ids()):
        arm = tuning.arm_of(record["levels"])
        assert record["config"]["train"]["lr"] == studies[arm.name].best_params["train.lr"]
        assert record["config"]["train"]["epochs"] == 1  # the matrix's own epochs, not the trials'

    out = cli("tune", exp, "--runs", runs, "--report")
    text = (tuning.files.dir / "report.md").read_text()
    assert "Best val_auroc per arm" in text and "Parameter importance" in text, out
    assert (tuning.files.dir / "plots" / "best_so_far.png").stat().st_size > 0
    assert (tuning.files.dir / "plots" / "slices.pdf").exists() and (tuning.files.dir / "report.tex").exists()


def test_a_trial_the_pruner_stops_ends_pruned_not_failed(tmp_path, one_thread):
    tune = {**TUNE, "pruner": {"kind": "median", "warmup_epochs": 0, "startup_trials": 1}, "arms": ["tokenizer"]}
    exp = write_experiment(tmp_path, base=BASE, tune=tune, factors={"tokenizer": ["direct"]}, data=DATA)
    tuning = Tuning.load(exp, None, {}, tmp_path / "runs")
    storage = open_journal(tuning.files.journal)
    with locked(tuning.files.budget_lock):
        tuning.open_studies(storage)
    study = tuning.study(storage, tuning.arms[0])
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 2e-3}, distributions={"train.lr": lr}, value=1.0,
                                              intermediate_values={1: 1.0, 2: 1.0}))  # fmt: skip
    ticket = next_trial(tuning, storage)
    state = train(ticket, tuning, threads=1)
    tell(ticket, tuning, state)
    store = tuning.files.trials
    assert state == "pruned" and store.status(ticket.job.id)["pruned"].startswith("pruned after epoch 1 of 2")
    trial = study.trials[ticket.trial.number]  # the arm's own settings, enqueued first
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
    assert store.job(ticket.job.id).checkpoint.exists() and not store.job(ticket.job.id).metrics.exists()
    assert json.loads(store.job(ticket.job.id).status.read_text())["state"] == "pruned"


def test_a_worker_killed_while_fitting_its_trials_own_codebook_is_replaced(tmp_path, one_thread):
    """The VQ arm tunes its codebook size (a fit no matrix cell has): worker A (a process) is SIGKILLed halfway
    through writing that fit; worker B (in this process) gives A's trial back, takes over the fit's claim, fits it
    once and finishes the budget."""
    space = {"tokenizer.codebook_size": {"choices": [64]}}  # not the preset's 512: every trial fits its own codebook
    tune = {**TUNE, "arm_space": {"vqvae512": space}}
    base = {**BASE, "tokenizer": {"epochs": 2}}  # a short VQ-VAE pretraining
    exp = write_experiment(tmp_path, base=base, tune=tune, factors={"tokenizer": ["vqvae512"]})
    runs = tmp_path / "runs"
    tuning = Tuning.load(exp, None, {}, runs)
    arm = tuning.arms[0]
    key = Recipe.of(tuning.trial_job(arm, {"train.lr": 1e-3, "tokenizer.codebook_size": 64})).fit_key
    files = tuning.files.trials.paths.cache.fit(key)

    finish(tune_cli(exp, runs, "--worker", "--threads", "1", env={"EXPMATRIX_CRASH_WRITE": f"{key}.json:1"}), -9)
    assert files.claim.exists() and not files.artifact.exists() and not files.failure.exists()
    logs = worker_here(exp, runs)

    study = tuning.study(open_journal(tuning.files.journal), arm)
    states = sorted((t.state.name, bool(t.user_attrs.get("stale"))) for t in study.trials)
    assert states == [("COMPLETE", False)] * TRIALS + [("FAIL", True)], logs  # the killed trial given back
    assert files.artifact.exists() and not files.claim.exists()  # fitted once, by B
    store = tuning.files.trials
    for t in study.trials:
        assert store.read_job(t.user_attrs["job"]).config.tokenizer.codebook_size == 64
    killed = next(t.user_attrs["job"] for t in study.trials if t.user_attrs.get("stale"))
    assert len(store.starts(killed)) == 2 and store.state(killed) == "done"  # redone after the kill

    export_best(tuning)  # the arm's best settings, its own tokenizer option included, refine its cells
    matrix, _ = tuned_matrix(tuning)
    assert {j.config.tokenizer.codebook_size for j in matrix.jobs} == {64}
    assert {Recipe.of(j).fit_key for j in matrix.jobs} == {key}  # the tuned matrix reuses the trials' fit
