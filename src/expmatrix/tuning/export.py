"""Each arm's best settings as an override file, and the tuned matrix that applies them to the arm's cells."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from expmatrix.config import SpecError, load_mapping
from expmatrix.matrix import Layer, Matrix, build_matrix
from expmatrix.runfiles import atomic_write
from expmatrix.tuning.budget import tally, used
from expmatrix.tuning.journal import locked, open_journal
from expmatrix.tuning.study import Arm, Tuning


def studies(tuning: Tuning) -> dict[str, optuna.Study]:
    """arm name -> its study, read from the journal (an error if tuning has not started)."""
    if not tuning.files.journal.exists():
        raise SpecError(f"{tuning.files.journal}: no tuning journal yet: run `expmatrix tune {tuning.path}` first")
    storage = open_journal(tuning.files.journal)
    with locked(tuning.files.budget_lock):
        tuning.open_studies(storage)  # checks that the journal is this tuning's
    return {arm.name: tuning.study(storage, arm) for arm in tuning.arms}


def best_record(tuning: Tuning, arm: Arm, study: optuna.Study) -> dict[str, Any]:
    """What `--export` writes for one arm; an arm whose budget is not finished is an error (equal budgets)."""
    counts, _ = tally(study, tuning.files.trials)
    finished = used(counts) - counts["running"]
    if finished < tuning.tune.trials or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SpecError(
            f"arm {arm.name}: {finished} of {tuning.tune.trials} trials finished ({counts['complete']} complete): "
            f"the arms are compared at equal budgets; run `expmatrix tune {tuning.path}` to finish"
        )
    best = study.best_trial
    return {
        "arm": arm.levels,
        "fingerprint": tuning.fingerprint(),
        "objective": {"metric": tuning.metric, "direction": tuning.direction, "value": best.value},
        "trial": best.number,
        "job": best.user_attrs.get("job"),
        "budget": {"trials": tuning.tune.trials, "epochs": tuning.tune.epochs},
        "trials": {k: counts[k] for k in ("complete", "pruned", "failed", "stale")},
        "settings": best.params,
    }


def export_best(tuning: Tuning) -> list[Path]:
    """Write `best/<arm>.yaml` for every arm; returns the paths."""
    found = studies(tuning)
    records = {arm.name: best_record(tuning, arm, found[arm.name]) for arm in tuning.arms}
    written = []
    for name, record in records.items():
        path = tuning.files.best_file(name)
        atomic_write(path, yaml.safe_dump(record, sort_keys=False))
        written.append(path)
    return written


def read_best(tuning: Tuning) -> dict[str, dict[str, Any]]:
    """arm name -> its exported record; missing or exported for another tuning: an error saying what to do."""
    out = {}
    for arm in tuning.arms:
        path = tuning.files.best_file(arm.name)
        if not path.exists():
            raise SpecError(f"{path}: not exported: run `expmatrix tune {tuning.path} --export` first")
        record = load_mapping(path)
        if record.get("fingerprint") != tuning.fingerprint():
            raise SpecError(f"{path}: exported for another tuning (experiment, space or budget): export again")
        out[arm.name] = record
    return out


def tuned_matrix(tuning: Tuning) -> tuple[Matrix, str]:
    """The matrix with each arm's best settings as its cells' last layer, named `<experiment>.tuned`,
    and the line its report states: how the arms were tuned."""
    best = read_best(tuning)

    def own(levels: dict[str, str]) -> Layer:
        arm = tuning.arm_of(levels)
        return (f"{tuning.files.best_file(arm.name)}: ", best[arm.name]["settings"])

    matrix = build_matrix(tuning.path, tuning.profile, tuning.overrides, per_cell=own, refine=tuning.factors)
    spec = matrix.spec.model_copy(update={"name": tuning.files.tuned_name(matrix.spec.name)})
    values = "; ".join(f"{name} {r['objective']['value']:.4g} (trial {r['trial']})" for name, r in best.items())
    t = tuning.tune
    note = (
        f"tuned: every arm ({', '.join(best)}) had the same budget of {t.trials} trials x {t.epochs} epochs "
        f"({t.sampler} sampler, seed {t.sampler_seed}, {t.pruner.kind} pruner), best {tuning.metric} on the "
        f"validation split: {values}; chosen on the validation split only"
    )
    return dataclasses.replace(matrix, spec=spec), note
