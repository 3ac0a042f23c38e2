"""Settings with no effect are rejected before anything runs, naming where they were set."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import REPO, write_experiment

from expmatrix.cli import main
from expmatrix.config import JobConfig, SpecError
from expmatrix.inert import check_consumed, consumed_keys
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore


def _check(tmp_path, **changes) -> None:
    check_consumed(build_matrix(write_experiment(tmp_path, **changes)), RunStore(tmp_path / "runs", "tiny"))


def test_the_flagship_sets_nothing_inert(tmp_path):
    check_consumed(build_matrix(REPO / "experiments" / "binning_vs_direct.yaml", "quick"), RunStore(tmp_path, "flag"))


def test_reads_follow_the_settings():
    base = {"data": {}, "tokenizer": {"kind": "direct", "name": "d"}}
    constant = consumed_keys(JobConfig.model_validate(base))
    cosine = consumed_keys(JobConfig.model_validate({**base, "train": {"schedule": "cosine", "ema": True}}))
    assert "train.min_lr_ratio" not in constant and "train.min_lr_ratio" in cosine
    assert "train.ema_decay" not in constant and "train.ema_decay" in cosine
    assert {"train.lr", "model.pooling", "data.use_met", "data.keys.y_train", "seed"} <= constant


def test_the_read_check_accepts_full_batches_larger_than_its_stand_in_data():
    base = {"data": {}, "tokenizer": {"kind": "direct", "name": "d"}}
    cfg = {**base, "train": {"batch_size": 2048, "fixed_shape": "drop"}}  # valid: the real data decides
    assert "train.fixed_shape" in consumed_keys(JobConfig.model_validate(cfg))


def test_a_factor_over_a_key_nobody_reads_is_rejected(tmp_path):
    factors = {"tokenizer": ["direct"], "train.min_lr_ratio": [0.0, 0.1]}  # the schedule is constant
    with pytest.raises(SpecError) as e:
        _check(tmp_path, factors=factors)
    assert "settings that have no effect" in str(e.value)
    assert "factors.train.min_lr_ratio: train.min_lr_ratio  (in cell tokenizer=direct, train.min_lr_ratio=0.0)" in str(
        e.value
    )


def test_a_base_setting_without_effect_is_rejected_and_when_makes_it_legal(tmp_path):
    with pytest.raises(SpecError, match=r"base\.train\.ema_decay"):
        _check(tmp_path, base={"train": {"ema_decay": 0.99, "epochs": 1}})
    factors = {
        "tokenizer": ["direct"],
        "schedule": {"constant": {"train.schedule": "constant"}, "cosine": {"train.schedule": "cosine"}},
        "floor": {"when": {"schedule": "cosine"}, "key": "train.min_lr_ratio", "levels": [0.0, 0.1]},
    }
    _check(tmp_path, factors=factors)  # min_lr_ratio only where the schedule reads it


def test_run_refuses_before_training(tmp_path):
    exp = write_experiment(tmp_path, factors={"tokenizer": ["direct"], "train.min_lr_ratio": [0.0, 0.1]})
    result = CliRunner().invoke(main, ["run", str(exp), "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 1 and "no effect" in result.output
    assert not (tmp_path / "runs" / "tiny").exists()
