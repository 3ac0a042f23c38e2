"""Trainer: exact resume after signals, NaN guard, accumulation, schedules, EMA, best weights, consumed keys."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
from torch import nn

from expmatrix.checkpoint import epoch_order
from expmatrix.config import DataConfig, DirectTokenizerConfig, ModelConfig, TrainConfig
from expmatrix.data import load_splits
from expmatrix.models.sizing import build_model
from expmatrix.tokenizers import build_tokenizer
from expmatrix.training.ema import EMA
from expmatrix.training.trainer import NonFiniteLoss, Preempted, Trainer, lr_factor, take

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(tokenizer, train, val) of 1600/200 synthetic events, direct tokenizer."""
    splits = load_splits(DataConfig(synthetic={"events": 2000, "seed": 0}), "synthetic", tmp_path_factory.mktemp("d"))
    tok = build_tokenizer(DirectTokenizerConfig(kind="direct", name="d"), splits["train"].feature_names, True)
    tok.fit(splits["train"])
    return tok, *[(tok.transform(splits[s]), torch.from_numpy(splits[s].label)) for s in ("train", "val")]


def _model(tok, **model):
    torch.manual_seed(0)
    return build_model(tok, ModelConfig(layers=2, heads=4, **{"dropout": 0.1, **model}), (16, 32), 2)


def _trainer(tok, train, **cfg) -> Trainer:
    base = {"epochs": 3, "batch_size": 128, "warmup_steps": 3, "lr": 1e-3}
    return Trainer(_model(tok), TrainConfig(**{**base, **cfg}), CPU, len(train[1]), seed=7)


def _assert_same_run(a: Trainer, b: Trainer) -> None:
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in a.history] == [
        {k: v for k, v in h.items() if k != "seconds"} for h in b.history
    ]
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


# dropout, EMA, accumulation, cosine and best-weight selection all have state that must survive a resume
RESUME_CFG = {"grad_accum": 2, "ema": True, "ema_decay": 0.9, "schedule": "cosine", "evaluate": "best"}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Trainer:
    tok, train, val = data
    whole = _trainer(tok, train, **RESUME_CFG)
    whole.fit(train, val, tmp_path_factory.mktemp("whole") / "a.pt")
    return whole


def _signal_at_forward(model: nn.Module, signum: int, n: int) -> None:
    """Send `signum` to this process at the n-th training forward pass (inside an optimizer step)."""
    count = [0]

    def hook(module, args):
        count[0] += module.training
        if module.training and count[0] == n:
            os.kill(os.getpid(), signum)

    model.register_forward_pre_hook(hook)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["usr1-after-a-step", "term-inside-an-accumulation-group", "term-after-epoch-1"])
def test_preempted_run_resumes_to_the_same_weights_and_metrics(data, uninterrupted, tmp_path, case):
    """A real signal during fit: checkpoint, `Preempted`, then a fresh process-like resume gives bitwise the
    same history and weights as the uninterrupted run (13 micro-batches per epoch, 2 per optimizer step)."""
    tok, train, val = data
    first = _trainer(tok, train, **RESUME_CFG)
    hooks, signum, position = {}, signal.SIGTERM, (1, 4)
    if case == "usr1-after-a-step":
        signum, position = signal.SIGUSR1, (1, 6)
        hooks["on_batch"] = lambda epoch, done: (epoch, done) == (1, 6) and os.kill(os.getpid(), signum)
    elif case == "term-inside-an-accumulation-group":  # micro-batch 3 of epoch 2: the step over batches 3-4 completes
        _signal_at_forward(first.model, signum, 13 + 3)
    else:
        position = (1, 0)
        hooks["on_epoch"] = lambda history: len(history) == 1 and os.kill(os.getpid(), signum)
    with pytest.raises(Preempted, match=f"{signal.Signals(signum).name} "):
        first.fit(train, val, tmp_path / "b.pt", **hooks)
    resumed = _trainer(tok, train, **RESUME_CFG)
    resumed._resume(tmp_path / "b.pt")
    assert (resumed.position.epoch, resumed.position.batch) == position
    resumed = _trainer(tok, train, **RESUME_CFG)
    resumed.fit(train, val, tmp_path / "b.pt")
    _assert_same_run(uninterrupted, resumed)
    assert resumed.summary() == uninterrupted.summary()


def test_signal_handlers_are_restored_after_fit_and_after_preemption(data, tmp_path):
    tok, train, val = data
    calls = []
    previous = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        _trainer(tok, train, epochs=1).fit(train, val, tmp_path / "a.pt")
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        with pytest.raises(Preempted):
            _trainer(tok, train, epochs=2).fit(
                train, val, tmp_path / "b.pt", on_batch=lambda e, b: os.kill(os.getpid(), signal.SIGUSR1)
            )
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == [signal.SIGUSR1]  # our handler again, not the trainer's
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_non_finite_loss_stops_with_the_epoch_and_batch(data, tmp_path):
    tok, (x, y), val = data
    x = {k: v.clone() for k, v in x.items()}
    event = 1000
    x["x"][event, 0, 0] = float("nan")  # the leading object of one event
    batch = int((epoch_order(len(y), 7, 0, CPU) == event).nonzero()) // 128 + 1
    trainer = _trainer(tok, (x, y))
    with pytest.raises(NonFiniteLoss, match=f"loss is nan at epoch 1, batch {batch} of 13$"):
        trainer.fit((x, y), val, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()  # nothing non-finite is ever checkpointed


def test_accumulated_micro_batches_equal_one_big_batch(data):
    """Gradients of 4 x 32 or 2 x 64 accumulated equal those of one batch of 128 (class weights on)."""
    tok, train, _ = data
    runs = []
    for batch, accum in [(128, 1), (64, 2), (32, 4)]:
        t = _trainer(tok, train, epochs=1, batch_size=batch, grad_accum=accum, class_weights="balanced", grad_clip=None)
        t.loss.prepare(train[1])
        t.model.eval()  # no dropout: the same gradients up to summation order
        t.opt = torch.optim.SGD(t.params, lr=0.1)  # an update linear in the gradient, to compare gradients
        t.sched = torch.optim.lr_scheduler.LambdaLR(t.opt, lambda step: 1.0)
        for s in range(3):
            t.train_step(*train, torch.arange(s * 128, (s + 1) * 128))
        runs.append(t)
        assert t.sched.last_epoch == 3  # one scheduler step per optimizer step
    for t in runs[1:]:
        for a, b in zip(runs[0].params, t.params, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.equal(runs[0].params[0], next(_model(tok).parameters()))  # they did train


def test_warmup_then_constant_or_cosine_to_the_floor():
    const = lr_factor(TrainConfig(warmup_steps=4), total_steps=10)
    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = lr_factor(TrainConfig(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1), total_steps=12)
    assert [cos(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert cos(7) == pytest.approx(0.1 + 0.9 * 0.5) and cos(12) == pytest.approx(0.1) and cos(50) == pytest.approx(0.1)


def test_ema_averages_and_its_weights_are_the_evaluated_ones(data, tmp_path):
    p = nn.Parameter(torch.tensor([0.0, 4.0]))
    ema = EMA([p], decay=0.75)
    p.data += 4.0
    ema.update()
    assert ema.shadow[0].tolist() == [1.0, 5.0]
    with ema.applied():
        assert p.tolist() == [1.0, 5.0]
    assert p.tolist() == [4.0, 8.0]

    tok, train, val = data
    t = _trainer(tok, train, epochs=1, ema=True, ema_decay=0.5)
    t.fit(train, val, tmp_path / "e.pt")
    assert all(torch.equal(a, b) for a, b in zip(t.params, t.ema.shadow, strict=True))
    assert t.summary() == {"evaluated_weights": "last", "ema": True, "precision": "fp32", "compiled": False}


@pytest.mark.slow
def test_best_weights_are_the_ones_with_the_lowest_validation_loss(data, tmp_path):
    tok, train, val = data
    t = _trainer(tok, train, epochs=4, lr=3e-2, evaluate="best")  # a high lr: the val loss is not monotonic
    history = t.fit(train, val, tmp_path / "f.pt")
    losses = [h["val_loss"] for h in history]
    assert t.summary()["best_epoch"] == losses.index(min(losses)) + 1
    assert t.validate(*val)["val_loss"] == min(losses)  # the model now holds the best epoch's weights


class Recording:
    """A config subclass that records which of its fields are read."""

    @staticmethod
    def of(cls, **values):
        read: set[str] = set()

        class Rec(cls):
            def __getattribute__(self, name):
                if name in cls.model_fields:
                    read.add(name)
                return super().__getattribute__(name)

        return Rec(**values), read


@pytest.mark.parametrize(
    "cfg,unread",
    [
        ({}, {"min_lr_ratio", "huber_delta", "ema_decay"}),
        ({"schedule": "cosine", "ema": True}, {"huber_delta"}),
        ({"loss": "huber"}, {"min_lr_ratio", "class_weights", "ema_decay"}),
        ({"loss": "vmf", "schedule": "cosine"}, {"class_weights", "huber_delta", "ema_decay"}),
    ],
)
def test_trainer_construction_reads_exactly_the_keys_that_have_an_effect(data, cfg, unread):
    """The every-key tracker builds the trainer with a meta model and no data."""
    tok = data[0]
    with torch.device("meta"):
        model = build_model(tok, ModelConfig(layers=2, heads=4), (16, 32), 2)
    rec, read = Recording.of(TrainConfig, **cfg)
    Trainer(model, rec, "meta", n_train=1000)
    assert set(TrainConfig.model_fields) - read == unread


@pytest.mark.parametrize("position,unread", [("rope", set()), ("learned", {"rope_theta"}), ("none", {"rope_theta"})])
def test_model_construction_reads_rope_settings_only_for_rope(data, position, unread):
    rec, read = Recording.of(ModelConfig, layers=2, heads=4, position=position)
    with torch.device("meta"):
        build_model(data[0], rec, (16, 32), 2)
    # target_params, ff_ratio: read by solve_size; init: by the job (pretraining.pretrain_settings)
    assert set(ModelConfig.model_fields) - read == unread | {"target_params", "ff_ratio", "init"}


def test_batches_follow_the_seeded_epoch_order(data):
    tok, (x, y), _ = data
    order = epoch_order(len(y), 7, 2, CPU)
    assert torch.equal(order, epoch_order(len(y), 7, 2, CPU)) and not torch.equal(order, epoch_order(len(y), 7, 1, CPU))
    assert torch.equal(take(x, order[:3])["x"], x["x"][order[:3]])
    assert math.ceil(len(y) / 128) == _trainer(tok, (x, y)).batches == 13
