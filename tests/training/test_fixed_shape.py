"""`train.fixed_shape`: every forward pass has one shape (full batches, every token slot), as CUDA graphs
(`train.compile: reduce-overhead`) need; `pad` trains the same model as the packed default path."""

from __future__ import annotations

import math

import pytest
import test_trainer
from conftest import write_experiment
from test_trainer import CPU, _model

from expmatrix.config import SpecError, TrainConfig
from expmatrix.matrix import build_matrix
from expmatrix.training.trainer import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
data = test_trainer.data  # the fixture: (tokenizer, train, val) of 1600/200 synthetic events
BASE = {"epochs": 2, "batch_size": 128, "warmup_steps": 3, "lr": 1e-3}  # 1600 events: the last batch holds 64


def fitted(data, tmp_path, **cfg) -> tuple[Trainer, set[tuple[int, ...]]]:
    """A trained 2-epoch trainer (no dropout: padding would draw more random numbers) and the shapes of the
    token masks its training forward passes saw."""
    tok, train, val = data
    model = _model(tok, dropout=0.0)
    shapes: set[tuple[int, ...]] = set()
    model.register_forward_pre_hook(lambda m, args: shapes.add(tuple(args[0]["mask"].shape)) if m.training else None)
    trainer = Trainer(model, TrainConfig(**BASE, **cfg), CPU, len(train[1]), seed=7)
    trainer.fit(train, val, tmp_path / "c.pt")
    return trainer, shapes


def test_padded_fixed_shapes_train_the_same_model_as_the_packed_default(data, tmp_path):
    default, default_shapes = fitted(data, tmp_path / "a")
    padded, padded_shapes = fitted(data, tmp_path / "b", fixed_shape="pad")
    seq = data[1][0]["mask"].shape[1]
    assert default_shapes == {(128, seq), (64, seq)} and padded_shapes == {(128, seq)}  # the last batch is padded
    assert default.batches == padded.batches == 13
    for a, b in zip(default.history, padded.history, strict=True):
        for key in ("train_loss", "val_loss", "val_auroc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (key, a[key], b[key])
    # (not the weights one by one: the key bias has no true gradient, and AdamW turns its rounding noise into steps)
    scores = [t.predict(data[2][0])[:, 1] for t in (default, padded)]
    assert abs(scores[0] - scores[1]).max() < 1e-4


def test_drop_trains_full_batches_only(data, tmp_path):
    dropped, shapes = fitted(data, tmp_path, fixed_shape="drop", grad_accum=5)
    n = len(data[1][1])
    assert dropped.batches == n // 128 == 12 and shapes == {(128, data[1][0]["mask"].shape[1])}
    assert dropped.sched.last_epoch == 2 * math.ceil(12 / 5)  # optimizer steps: the dropped tail is no step
    with pytest.raises(ValueError, match="fixed_shape drop: 100 training events make no full batch of 128"):
        Trainer(_model(data[0]), TrainConfig(**BASE, fixed_shape="drop"), CPU, 100)


def test_the_setting_is_recorded_when_set_and_leaves_existing_job_ids_alone(tmp_path):
    ids = {j.id for j in build_matrix(write_experiment(tmp_path)).jobs}
    model, train = {"target_params": 20000, "layers": 2, "heads": 4}, {"epochs": 1, "batch_size": 128, "lr": 1e-3}
    explicit = {"model": model, "train": {**train, "warmup_steps": 5, "fixed_shape": False}}
    assert {j.id for j in build_matrix(write_experiment(tmp_path, base=explicit)).jobs} == ids
    padded = build_matrix(write_experiment(tmp_path, base={"model": model, "train": {**train, "fixed_shape": "pad"}}))
    assert not {j.id for j in padded.jobs} & ids and all(j.config.train.fixed_shape == "pad" for j in padded.jobs)
    graphs = {"model": model, "train": {**train, "compile": "reduce-overhead"}}
    with pytest.raises(SpecError, match=r"train: .*reduce-overhead \(CUDA graphs\) replays one shape: set train"):
        build_matrix(write_experiment(tmp_path, base=graphs))
