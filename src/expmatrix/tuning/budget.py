"""Every arm gets the same number of trials: counting, giving back the trials of dead workers, asking.

A journal has no heartbeat, so a RUNNING trial is alive while its job's claim is (the claim a job's worker
touches every `run.heartbeat_seconds`), or, before its job is claimed, while the worker that asked for it is
(`Claims.abandoned`: gone on this host, or silent for `run.stale_after_seconds`). A trial that is not is
failed in its study with the user attribute `stale`, does not count, and its settings are enqueued again:
the next trial of the arm is the same job, which resumes from its checkpoint.
Counting and asking happen under one lock (`TuneFiles.budget_lock`), so workers never overshoot a budget.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from expmatrix.config import Job
from expmatrix.store import RunStore
from expmatrix.tuning.space import suggest
from expmatrix.tuning.study import Arm, Tuning


@dataclass
class Ticket:
    """A trial this worker owns, and the job it trains."""

    arm: Arm
    study: optuna.Study
    trial: optuna.Trial
    job: Job


def alive(trial: FrozenTrial, store: RunStore) -> bool:
    """A RUNNING trial whose job's claim, or (not claimed yet) whose asking worker, is alive."""
    claim = store.claims.info(trial.user_attrs.get("job", "")) if "job" in trial.user_attrs else None
    if claim is not None and not store.claims.abandoned(claim):
        return True
    owner = trial.user_attrs.get("worker")
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return owner is not None and not store.claims.abandoned({**owner, "age": time.time() - started})


def tally(study: optuna.Study, store: RunStore) -> tuple[Counter, list[FrozenTrial]]:
    """(counts by kind: complete, pruned, failed, stale, running, waiting; the RUNNING trials that are not alive)."""
    counts, dead = Counter(), []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING and not alive(t, store):
            dead.append(t)
            counts["stale"] += 1
        elif t.state == TrialState.FAIL and t.user_attrs.get("stale"):
            counts["stale"] += 1
        else:
            counts[t.state.name.lower().replace("fail", "failed")] += 1
    return counts, dead


def used(counts: Counter) -> int:
    """Trials that count against the budget: finished ones (stale ones excepted) and live running ones."""
    return counts["complete"] + counts["pruned"] + counts["failed"] + counts["running"]


def give_back(study: optuna.Study, trial: FrozenTrial, why: str) -> None:
    """Fail a trial whose worker is gone (`stale`: not counted) and enqueue its settings again."""
    if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
        return  # finished meanwhile, or given back by another worker
    # optuna has no public getter or setter for a trial another process asked for: through the study's storage
    study._storage.set_trial_user_attr(trial._trial_id, "stale", why)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number})


def next_trial(tuning: Tuning, storage: optuna.storages.BaseStorage) -> Ticket | str:
    """Under the budget lock: give back dead trials, then ask in the arm with the fewest trials used.
    'wait': every budget is used but trials still run elsewhere (one may die and be given back);
    'done': every arm has its budget of finished trials; 'again': the point asked for builds no job (a failed
    trial, counted: ask again)."""
    store, ranked, running = tuning.files.trials, [], 0
    for arm in tuning.arms:
        study = tuning.study(storage, arm)
        counts, dead = tally(study, store)
        for trial in dead:
            give_back(study, trial, f"its worker {trial.user_attrs.get('worker')} is gone")
        running += counts["running"]
        if used(counts) < tuning.tune.trials:
            ranked.append((used(counts), arm, len(study.get_trials(deepcopy=False))))
    if not ranked:
        return "wait" if running else "done"
    _, arm, n = min(ranked, key=lambda r: r[0])
    study = tuning.study(storage, arm, n)  # its sampler seeded by the trial number
    trial = study.ask()
    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    try:
        job = tuning.trial_job(arm, suggest(trial, arm.space))
    except Exception as e:  # a point of the space that builds no job (checked at the corners): a failed trial
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        study.tell(trial, state=TrialState.FAIL)
        print(f"{arm.name}: trial {trial.number} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return "again"
    trial.set_user_attr("job", job.id)
    return Ticket(arm, study, trial, job)
