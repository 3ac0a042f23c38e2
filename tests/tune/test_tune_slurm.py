"""`expmatrix submit EXP --tune` on a real local SLURM: an array of tune workers sharing one journal."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import test_tuning as tuning_tests
from conftest import write_experiment
from optuna.trial import TrialState
from slurm_cluster import available

from expmatrix.tuning import Tuning
from expmatrix.tuning.journal import open_journal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executors"))
from test_hpc_slurm import submit, wait_drained  # noqa: E402 - the helpers of the executor tests' SLURM

REASON = available() if os.environ.get("EXPMATRIX_SLURM") == "1" else "set EXPMATRIX_SLURM=1 (done by .ci/run)"
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

TUNE = {**tuning_tests.TUNE, "epochs": 1}  # 2 trials per arm, no pruner, 1 epoch each
BASE = tuning_tests.BASE


def test_a_tune_array_uses_every_arms_budget_once(slurm, tmp_path):
    exp, runs = write_experiment(tmp_path, base=BASE, tune=TUNE), tmp_path / "runs"
    out = submit(slurm, exp, runs, "--tune", "--workers", "2", "--hpc", "cpus=1")
    assert "arrays: tune 2 tasks" in out and "report" not in out.split("submitted: ")[1]
    wait_drained(slurm, 900)
    tuning = Tuning.load(exp, None, {}, runs)
    storage = open_journal(tuning.files.journal)
    jobs = []
    for arm in tuning.arms:
        trials = tuning.study(storage, arm).get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * TUNE["trials"], (arm.name, slurm.finished_jobs())
        jobs += [t.user_attrs["job"] for t in trials]
    assert len(set(jobs)) == len(jobs) == 2 * TUNE["trials"]  # no trial trained twice
    assert all(tuning.files.trials.state(j) == "done" for j in jobs)


def test_a_tune_array_renders_for_both_backends_and_condor_parses_it():
    from test_hpc import plan_for  # a fixed cluster-like plan

    from expmatrix.executors.backend import ArrayStage
    from expmatrix.executors.condor import CondorBackend
    from expmatrix.executors.slurm import SlurmBackend

    worker = "tune /cluster/exp/thesis.yaml --runs /cluster/runs --profile quick --worker --threads {}"
    tune = (ArrayStage("tune", (), workers=3),)
    sbatch = SlurmBackend().files(replace(plan_for("merlin7", report=False), stages=tune))
    assert list(sbatch) == ["tune.sbatch"] and "#SBATCH --array=0-2\n" in sbatch["tune.sbatch"]
    assert f"expmatrix {worker.format(8)} &" in sbatch["tune.sbatch"] and "3 tune workers" in sbatch["tune.sbatch"]
    htcondor2 = pytest.importorskip("htcondor2")
    files = CondorBackend().files(replace(plan_for("stoomboot", report=False), stages=tune))
    assert htcondor2.Submit(files["tune.sub"]).getQArgs() == "3"
    assert files["tune.sh"].splitlines()[-1] == f"exec expmatrix {worker.format(4)}"
