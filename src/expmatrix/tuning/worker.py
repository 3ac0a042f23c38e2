"""A tune worker: ask for a trial, train its job through `run_job`, tell the study; until every arm has its budget.

Any number of workers share the journal (local processes, or the tasks of a cluster array). A trial's job
is an ordinary job in runs/<experiment>.tune/: claimed, heartbeated, checkpointed, resumed after a kill.
A job that is already finished (the same settings suggested again, or a given-back trial whose job ended
before its worker could tell the study) is not trained again: its stored result is told.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.trial import TrialState

from expmatrix.datafiles import prepare_data
from expmatrix.shared_stages import pending_stages, run_stage
from expmatrix.stop import stop_requests
from expmatrix.training.job import EndedEarly, run_job
from expmatrix.tuning.budget import Ticket, give_back, next_trial
from expmatrix.tuning.journal import locked, open_journal, repair
from expmatrix.tuning.study import Tuning

T = TypeVar("T")
FINISHED = ("done", "pruned", "failed")
POLL_SECONDS = 2.0  # while waiting on a job another worker trains, or on the last trials of the budget


def prepare(tuning: Tuning, log: Callable[[str], None] = print) -> None:
    """Data files of every arm, and the shared stages of the arms whose trials all share them (no tuned
    `tokenizer.` key), once, by the first worker (the others wait for it). A trial that changes its tokenizer
    fits its own, under the fit's claim. A stage that fails is recorded: the trials that need it fail, no other."""
    store = tuning.files.trials
    shared = [a.job for a in tuning.arms if not any(k.startswith("tokenizer.") for k in a.space)]
    with locked(tuning.files.prepare_lock, grace_seconds=int(tuning.matrix.spec.run.stale_after_seconds)):
        prepare_data([a.job for a in tuning.arms], store)
        for stage in pending_stages(shared, store):
            try:
                run_stage(stage, store)
            except Exception as e:  # noqa: BLE001 - recorded with the stage; its trials fail with it
                log(f"{stage.describe()}: failed: {type(e).__name__}: {e}")


def guarded(journal: Path, call: Callable[[], T]) -> T:
    """`call()`; when a damaged journal line breaks it (optuna raises JSONDecodeError, or AttributeError for its
    own write that the damage swallowed), mend the journal (`repair`), say so, and call once more."""
    try:
        return call()
    except (json.JSONDecodeError, AttributeError):
        problems = repair(journal)
        if not problems:
            raise
        for problem in problems:
            print(problem, file=sys.stderr)
        return call()


def reporter(ticket: Ticket, tuning: Tuning) -> Callable[[list[dict]], None]:
    """The `on_epoch` hook: report each new epoch's objective; raise `EndedEarly('pruned')` when the pruner says so."""
    metric, epochs = tuning.metric, tuning.tune.epochs

    def prune(history: list[dict]) -> bool:
        report(ticket.trial, history, metric)
        return history[-1]["epoch"] < epochs and ticket.trial.should_prune()

    def on_epoch(history: list[dict]) -> None:
        if guarded(tuning.files.journal, lambda: prune(history)):
            epoch, value = history[-1]["epoch"], history[-1][metric]
            raise EndedEarly("pruned", f"pruned after epoch {epoch} of {epochs}: {metric} {value:.5g}")

    return on_epoch


def report(trial: optuna.Trial, history: list[dict], metric: str) -> None:
    """Every epoch of `history` the trial has not seen (a resumed job reports its earlier epochs too)."""
    seen = trial.study._storage.get_trial(trial._trial_id).intermediate_values  # optuna has no public getter
    for row in history:
        if row["epoch"] not in seen:
            trial.report(row[metric], step=row["epoch"])


def train(ticket: Ticket, tuning: Tuning, threads: int, stopped: Callable[[], bool] = lambda: False) -> str:
    """The job's final state: trained here, or finished already (by anyone); `preempted` when a stop signal
    comes while another worker trains it (the trial is given back)."""
    store, hook = tuning.files.trials, reporter(ticket, tuning)
    while True:
        state = store.state(ticket.job.id)
        if state in FINISHED:
            return state
        state = run_job(ticket.job, store, threads, on_epoch=hook)
        if state != "claimed":
            return state
        if stopped():
            return "preempted"
        time.sleep(POLL_SECONDS)  # the same settings, trained by another worker: wait for its result


def tell(ticket: Ticket, tuning: Tuning, state: str) -> None:
    """The study learns what the job became; a preempted or lost job's trial is given back (it resumes later)."""
    store, study, trial = tuning.files.trials, ticket.study, ticket.trial
    if state in ("preempted", "lost"):
        with locked(tuning.files.budget_lock):  # as every give-back: never while another worker counts
            give_back(study, study._storage.get_trial(trial._trial_id), f"job {state}")
        return
    if state in ("done", "pruned"):
        report(trial, store.history(ticket.job.id), tuning.metric)
    if state == "done":
        study.tell(trial, store.metrics(ticket.job.id)["val"][tuning.metric], skip_if_finished=True)
        return
    if state == "failed":
        trial.set_user_attr("error", store.status(ticket.job.id).get("error", "failed"))
    study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL, skip_if_finished=True)


def work(tuning: Tuning, threads: int = 1, log: Callable[[str], None] = print) -> Counter:
    """Run trials until every arm has its budget (or a stop signal); the final states of the jobs run here."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = guarded(tuning.files.journal, lambda: open_journal(tuning.files.journal))
    with locked(tuning.files.budget_lock):
        guarded(tuning.files.journal, lambda: tuning.open_studies(storage))
    prepare(tuning, log)
    states: Counter = Counter()
    with stop_requests() as stop:
        while stop.signal is None:
            with locked(tuning.files.budget_lock):
                ticket = guarded(tuning.files.journal, lambda: next_trial(tuning, storage))
            if ticket == "done":
                break
            if ticket == "wait":
                time.sleep(POLL_SECONDS)
            if not isinstance(ticket, Ticket):  # wait, or again
                continue
            state = train(ticket, tuning, threads, lambda: stop.signal is not None)
            guarded(tuning.files.journal, lambda: tell(ticket, tuning, state))  # noqa: B023 - called right here
            states[state] += 1
            log(f"{ticket.arm.name}: trial {ticket.trial.number}, job {ticket.job.id}: {state}")
            if state == "preempted":
                break
    return states
