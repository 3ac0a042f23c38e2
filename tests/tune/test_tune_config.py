"""The `tune` section: each bad input is an error naming its key path (or the journal), before any trial runs."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from conftest import write_experiment
from optuna.storages.journal._storage import JournalOperation

from expmatrix.assembly.recipe import Recipe
from expmatrix.config import VAL_METRICS, SpecError
from expmatrix.metrics import binary_metrics
from expmatrix.tuning import Tuning
from expmatrix.tuning.journal import NO_OP, locked, open_journal
from expmatrix.tuning.report import tables

SPACE = {
    "train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "train.warmup_steps": {"low": 0, "high": 50, "type": "int"},
}


def tuning(tmp_path, runs=None, **tune) -> Tuning:
    exp = write_experiment(tmp_path, tune={"objective": {"metric": "val_auroc"}, "space": SPACE, **tune})
    return Tuning.load(exp, None, {}, runs or tmp_path / "runs")


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        (
            {"space": {"train.lr": {"low": 1e-2, "high": 1e-4}}},
            "tune.space.train.lr: Value error, low 0.01 must be below",
        ),
        ({"space": {"train.lr": {"low": 0, "high": 1, "log": True}}}, "tune.space.train.lr: Value error, log-uniform"),
        ({"space": {"model.layers": {"low": 1, "high": 2.5, "type": "int"}}}, "tune.space.model.layers: Value error"),
        ({"space": {"train.lr": {"low": 1e-4}}}, "tune.space.train.lr: Value error, give low and high"),
        ({"objective": {"metric": "test.auroc"}}, "tune.objective.metric: Value error, 'test.auroc': tuning reads"),
        ({"objective": {"metric": "val_angle"}}, "tune.objective.metric: classification jobs log no 'val_angle'"),
        ({"space": {"train.foo": {"low": 1, "high": 2}}}, "tune.space: train.foo: unknown key; valid keys: amp,"),
        ({"space": {"train.min_lr_ratio": {"low": 0, "high": 0.5}}}, "tune.space.train.min_lr_ratio: arm tokenizer"),
        ({"space": {"train.warmup_steps": {"choices": [1, "x"]}}}, "tune.space: train.warmup_steps: Input should be"),
        ({"space": {"tokenizer.n_bins": {"choices": [3, 5]}}}, "tune.space.tokenizer.n_bins: refines the arm factor"),
        (
            {"space": {"tokenizer.n_bins": {"choices": [3, 5]}}, "arms": []},
            "tune.space: sets tokenizer.n_bins, which factor 'tokenizer' varies",
        ),
        (
            {"arm_space": {"direct": {"tokenizer.codebook_size": {"choices": [128, 512]}}}},
            "tune.arm_space.direct.tokenizer.codebook_size: arm tokenizer=direct: its tokenizer preset 'direct' "
            "(direct) has no option 'codebook_size'; its options: transforms,",
        ),
        (
            {"arm_space": {"vqvae512": {"tokenizer.codebook_size": {"choices": [128]}}}},
            "tune.arm_space.vqvae512: names no arm; arms: tokenizer=direct, tokenizer=binned_ambre5",
        ),
        (
            {"arm_space": {"tokenizer=binned_ambre5": {"train.lr": {"low": 1e-3, "high": 1e-2}}}},
            "tune: Value error, arm_space.tokenizer=binned_ambre5.train.lr: in `space` too",
        ),
        ({"space": {"train.epochs": {"choices": [1, 2]}}}, "train.epochs is the budget (`tune.epochs`)"),
        ({"space": {}}, "give a space (every arm) or an arm_space (one arm): there is nothing to tune"),
        ({"arms": ["pooling"]}, "tune.arms: no factor 'pooling'; factors: tokenizer"),
        ({"pruner": "sometimes"}, "tune.pruner.kind: Input tag 'sometimes'"),
    ],
)
def test_bad_input_names_its_key_path(tmp_path, tune, message):
    with pytest.raises(SpecError) as e:
        tuning(tmp_path, **tune)
    assert message in str(e.value)
    assert str(e.value).startswith(str(tmp_path / "tiny.yaml"))


def test_an_experiment_without_a_tune_section_is_told_so(tmp_path):
    with pytest.raises(SpecError, match="no `tune` section"):
        Tuning.load(write_experiment(tmp_path), None, {}, tmp_path / "runs")


def test_arms_default_to_every_factor_and_trial_jobs_are_matrix_jobs(tmp_path):
    t = tuning(tmp_path, epochs=3, seed=7)
    assert [a.name for a in t.arms] == ["tokenizer=direct", "tokenizer=binned_ambre5"]
    arm = t.arms[1]
    job = t.trial_job(arm, {"train.lr": 3e-3, "train.warmup_steps": 9})
    assert (job.seed, job.levels) == (7, {"tokenizer": "binned_ambre5"})
    train = job.config.train.model_dump()
    assert train | {"lr": 3e-3, "warmup_steps": 9, "epochs": 3} == train
    assert t.trial_job(arm, {"train.lr": 3e-3, "train.warmup_steps": 9}).id == job.id  # stable
    assert t.trial_job(arm, {"train.lr": 3e-3, "train.warmup_steps": 10}).id != job.id


def test_the_metrics_a_task_logs_are_the_trainers(tmp_path):
    scores, labels = np.linspace(0, 1, 50), np.arange(50) % 2
    assert VAL_METRICS["classification"] == ("val_loss", *(f"val_{k}" for k in binary_metrics(scores, labels)))
    assert NO_OP == JournalOperation.DISCARD_TRIALS  # the op optuna's replay skips: a mended line


def test_a_journal_of_another_space_is_an_error_naming_it(tmp_path):
    runs = tmp_path / "runs"
    first = tuning(tmp_path, runs)
    storage = open_journal(first.files.journal)
    with locked(first.files.budget_lock):
        first.open_studies(storage)
    study = first.study(storage, first.arms[0])
    first_trial = study.get_trials()[0].system_attrs["fixed_params"]
    assert first_trial == {"train.lr": 1e-3, "train.warmup_steps": 5}  # the arm's own settings
    assert study.get_trials()[0].state == optuna.trial.TrialState.WAITING
    other = tuning(tmp_path, runs, space={"train.lr": {"low": 1e-5, "high": 1e-2, "log": True}})
    with pytest.raises(SpecError, match=r"studies.journal: written for another experiment, arms, space or budget"):
        other.open_studies(open_journal(other.files.journal))
    more = tuning(tmp_path, runs, trials=50)  # a bigger budget continues the same studies
    more.open_studies(open_journal(more.files.journal))


ARM_SPACE = {
    "vqvae512": {
        "tokenizer.embedding_init": {"choices": ["fresh", "codebook"]},
        "tokenizer.codebook_size": {"choices": [128, 512, 2048]},
    },
    "binned_ambre5": {"tokenizer.n_bins": {"low": 3, "high": 8, "type": "int"}},
}
# the angle rules without their pinned width (2*pi/5 in the preset), so that the bin count can vary
BINNED = {"tokenizer": "binned_ambre5", "tokenizer.rules.phi": "cyclic", "tokenizer.rules.MET_phi": "cyclic"}


@pytest.mark.slow  # builds every corner of three arms' spaces
def test_each_arm_tunes_its_own_preset_options_on_top_of_the_shared_space(tmp_path):
    levels = {"direct": {"tokenizer": "direct"}, "binned_ambre5": BINNED, "vqvae512": {"tokenizer": "vqvae512"}}
    factors = {"tokenizer": levels}
    exp = write_experiment(tmp_path, factors=factors, tune={"objective": {"metric": "val_auroc"}, "space": SPACE,
                                                            "arm_space": ARM_SPACE})  # fmt: skip
    t = Tuning.load(exp, None, {}, tmp_path / "runs")
    assert {a.name: list(a.space) for a in t.arms} == {
        "tokenizer=direct": [*SPACE],
        "tokenizer=binned_ambre5": [*SPACE, "tokenizer.n_bins"],
        "tokenizer=vqvae512": [*SPACE, "tokenizer.embedding_init", "tokenizer.codebook_size"],
    }
    vq = t.arms[2]
    job = t.trial_job(vq, {"train.lr": 1e-3, "train.warmup_steps": 5, "tokenizer.codebook_size": 128,
                           "tokenizer.embedding_init": "codebook"})  # fmt: skip
    tok = job.config.tokenizer
    assert (tok.codebook_size, tok.embedding_init, tok.code_dim, job.levels) == (128, "codebook", 4, vq.levels)
    assert Recipe.of(job).fit_key != Recipe.of(vq.job).fit_key  # its own codebook: its own fit
    binned = t.trial_job(t.arms[1], {"train.lr": 1e-3, "train.warmup_steps": 5, "tokenizer.n_bins": 7})
    assert binned.config.tokenizer.n_bins == 7
    storage = open_journal(t.files.journal)
    with locked(t.files.budget_lock):
        t.open_studies(storage)
    first = t.study(storage, vq).get_trials()[0].system_attrs["fixed_params"]
    # the arm's own settings come first: its preset's options too
    assert first == {"train.lr": 1e-3, "train.warmup_steps": 5, "tokenizer.embedding_init": "codebook",
                     "tokenizer.codebook_size": 512}  # fmt: skip
    assert "tokenizer=vqvae512 also tokenizer.embedding_init, tokenizer.codebook_size" in t.describe()
    spaces = next(table for table in tables(t, {}, {}) if table.name == "spaces")  # what the report lists
    assert spaces.headers == ["arm", *SPACE, "tokenizer.n_bins", "tokenizer.embedding_init", "tokenizer.codebook_size"]
    assert spaces.rows == [
        ["tokenizer=direct", "[0.0001, 0.01] log", "[0, 50] int", "-", "-", "-"],
        ["tokenizer=binned_ambre5", "[0.0001, 0.01] log", "[0, 50] int", "[3, 8] int", "-", "-"],
        ["tokenizer=vqvae512", "[0.0001, 0.01] log", "[0, 50] int", "-", "{fresh, codebook}", "{128, 512, 2048}"],
    ]
