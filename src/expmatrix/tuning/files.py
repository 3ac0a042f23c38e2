"""The tuning run directory: one class names its files (as `RunStore` names a job's).

runs/<experiment>.tune/                 TuneFiles(root, experiment).dir
    <job-id>/               the trials: ordinary job run directories (`TuneFiles.trials`, a RunStore)
    studies.journal         journal         optuna's journal: one study per arm, shared by every worker
    studies.journal.lock    (optuna)        held while a worker appends to the journal
    budget.lock             budget_lock     held while a worker counts an arm's trials and asks for one
    prepare.lock            prepare_lock    held while a worker generates data and fits tokenizers
    studies.journal.damaged-<time>          the journal as it was before a damaged line was repaired
    best/<arm>.yaml         best_file       `--export`: the arm's best settings, as dotted overrides
    report.md|tex|html, tables/, plots/     `--report`
runs/<experiment>.tuned/                the tuned matrix (`--run`): run directories and its report
"""

from __future__ import annotations

from pathlib import Path

from expmatrix.store import RunStore

TRIALS_SUFFIX, TUNED_SUFFIX = ".tune", ".tuned"


class TuneFiles:
    """The files of one experiment's tuning under `root/<experiment>.tune/`."""

    def __init__(self, root: str | Path, experiment: str, stale_after: float):
        self.trials = RunStore(root, experiment + TRIALS_SUFFIX, stale_after)  # trials are ordinary jobs
        self.dir = self.trials.dir

    @property
    def journal(self) -> Path:
        return self.dir / "studies.journal"

    @property
    def budget_lock(self) -> Path:
        return self.dir / "budget"  # optuna's lock classes add `.lock`

    @property
    def prepare_lock(self) -> Path:
        return self.dir / "prepare"

    @property
    def best_dir(self) -> Path:
        return self.dir / "best"

    def best_file(self, arm: str) -> Path:
        return self.best_dir / f"{arm}.yaml"

    @staticmethod
    def tuned_name(experiment: str) -> str:
        """The experiment name of the tuned matrix: its run directories go to runs/<experiment>.tuned/."""
        return experiment + TUNED_SUFFIX
