"""Equal-budget tuning: one optuna study per arm in a journal under runs/<experiment>.tune/, every trial an
ordinary job (stable id, claim, heartbeat, resume), the test split never used to choose; then the matrix
with each arm's best settings (runs/<experiment>.tuned/).

    study.py    arms, the job a trial trains, studies, sampler and pruner; the checks before any trial
    budget.py   counting the budget, giving back dead workers' trials, asking
    worker.py   the worker loop: ask, train through `run_job` (pruning per epoch), tell
    journal.py  optuna's journal file, its locks, the repair of damaged lines
    export.py   best settings per arm as override files; the tuned matrix
    report.py   the tuning report
    files.py    the file names of the tuning directory
"""

from expmatrix.tuning.study import Arm, Tuning

__all__ = ["Arm", "Tuning"]
