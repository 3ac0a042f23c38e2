"""The hierarchical model: T1 never mixes DOMs, padding is never attended, every parameter trains, the budget
matches the flat model's, and a preempted run resumes bitwise."""

from __future__ import annotations

import itertools
import os
import signal

import numpy as np
import pytest
import torch
from conftest import REPO

from expmatrix.assembly import parts as parts_module
from expmatrix.assembly.fits import tokenizer_for
from expmatrix.assembly.parts import event_tokens, fit_view, sensor_tokens
from expmatrix.config import JobConfig, ModelConfig, Presets, PulsesConfig, TrainConfig
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.data.icecube_long import simulate_long
from expmatrix.data.icecube_ragged import RaggedWriter
from expmatrix.data.icecube_synthetic import sensor_positions
from expmatrix.data.pulses import read_pulses
from expmatrix.models.hierarchical import DomGroups, HierarchicalTransformer
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.models.transformer import trainable_params
from expmatrix.tokenizers.base import take
from expmatrix.tokenizers.ragged import Ragged
from expmatrix.training import trainer as trainer_module
from expmatrix.training.trainer import Preempted, Trainer

PRESETS = Presets(REPO / "tokenizers" / "icecube")
TOKENIZERS = ["direct_icecube", "integer_icecube"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """~100 long events (several pulses per DOM) in the ragged layout, the same events in every split."""
    pulses, counts, triggered, direction = simulate_long(np.random.default_rng(4), 192, sensor_positions())
    ends = np.cumsum(counts)
    keep = np.flatnonzero(triggered & (counts < 600))  # short enough for a quick test
    rows = np.concatenate([np.arange(ends[i] - counts[i], ends[i]) for i in keep])
    path = tmp_path_factory.mktemp("long") / "long.h5"
    with RaggedWriter(path, PULSE_FEATURES, geometry=sensor_positions()) as out:
        for split in ("train", "val", "test"):
            out.append(split, pulses[rows], counts[keep], direction[keep].astype(np.float32))
    return path


def _config(name: str, **model) -> JobConfig:
    return JobConfig.model_validate({"data": {"source": "icecube"}, "tokenizer": PRESETS.get(name, "test"),
                                     "train": {"loss": "vmf"}, "model": model})  # fmt: skip


@pytest.fixture(scope="module")
def fitted(long_file):
    """name -> (tokenizer, tokens of the training split with sensors, targets)."""
    out = {}
    for name in TOKENIZERS:
        tok = tokenizer_for(_config(name))
        events = read_pulses(long_file, "train", tok.features, sensors=True)
        tok.fit(events)
        out[name] = tok, tok.transform(events) | sensor_tokens(events), torch.from_numpy(events.target)
    return out


def _model(tok, **cfg) -> HierarchicalTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"layers": 3, "heads": 2, "kind": "hierarchical", "dom_layers": 2, **cfg})
    return build_model(tok, cfg, (16, 32), 3)


def test_t1_never_attends_across_doms(fitted):
    """Changing the pulses of one DOM changes that DOM's embedding and no other's."""
    tok, tokens, _ = fitted["direct_icecube"]
    batch = take(tokens, slice(0, 6))
    model = _model(tok).eval()
    groups = DomGroups(batch["mask"], batch["sensor"])
    big = int(torch.argmax(groups.counts))  # the DOM with the most pulses: T1 attention really runs there
    assert groups.counts[big] > 3 and (groups.counts == 1).float().mean() > 0.5  # most DOMs: one pulse
    slots = groups.order[groups.first[big] : groups.first[big] + groups.counts[big]]
    changed = {k: v.clone() for k, v in batch.items()}
    changed["x"].view(-1, changed["x"].shape[-1])[slots, 0] += 0.5  # later pulse times in that DOM only

    def doms(t):
        with torch.no_grad():
            h, mask = model.embed(t)
            d, dmask = model.encode_doms(h, mask, t["sensor"], t["sensor_xyz"])
        return d[dmask]

    a, b = doms(batch), doms(changed)
    same = (a == b).all(dim=1)
    row = int((groups.by_time == big).nonzero())  # DOMs enter T2 in the order of their first pulse
    assert (torch.diff(groups.order[groups.first][groups.by_time]) > 0).all()  # event by event, in time order
    assert not same[row] and same.sum() == len(same) - 1  # bitwise unchanged elsewhere


@pytest.mark.parametrize("name", TOKENIZERS)
def test_padded_slots_are_never_attended(fitted, name):
    """Junk in padded slots, or more padded slots, leaves every output bitwise unchanged."""
    tok, tokens, _ = fitted[name]
    batch = take(tokens, slice(0, 5))
    model = _model(tok, pooling="mean").eval()
    junk = {k: v.clone() for k, v in batch.items()}
    pad = ~junk["mask"]
    junk["sensor"][pad] = 17
    junk["sensor_xyz"][pad] = 1e4
    for key, value in junk.items():
        if key not in ("mask", "sensor", "sensor_xyz") and value.shape[:2] == pad.shape:
            value[pad] = value[pad].flip(0) if value.is_floating_point() else value[pad]
    wider = {k: torch.cat([v, torch.zeros_like(v[:, :7])], dim=1) if v.dim() >= 2 else v for k, v in batch.items()}
    with torch.no_grad():
        out = model(batch)
        assert torch.equal(out, model(junk)) and torch.equal(out, model(wider))
        alone = torch.cat([model(take(batch, slice(i, i + 1))) for i in range(5)])
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-5)  # events do not see each other


@pytest.mark.parametrize("name,pooling,position", list(itertools.product(TOKENIZERS, ["cls", "mean", "max"],
                                                                         ["sinusoidal", "rope", "none"])))  # fmt: skip
def test_every_parameter_gets_a_gradient_in_the_first_step(fitted, name, pooling, position):
    tok, tokens, target = fitted[name]
    model = _model(tok, pooling=pooling, position=position)
    trainer = Trainer(model, TrainConfig(loss="vmf", batch_size=8, epochs=1), "cpu", 8)
    out = model(take(tokens, slice(0, 8)))
    trainer.loss(out, target[:8])[0].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("target", [60_000, 200_000])
def test_parameter_budget_matches_the_flat_model(fitted, name, target):
    tok = fitted[name][0]
    flat = solve_size(tok, ModelConfig(target_params=target, layers=4, heads=4), 3, 128)
    hier = solve_size(tok, ModelConfig(target_params=target, layers=4, heads=4, kind="hierarchical"), 3, 128)
    assert abs(hier.params - flat.params) <= 0.02 * flat.params
    with torch.device("meta"):
        model = build_model(tok, ModelConfig(target_params=target, layers=4, heads=4, kind="hierarchical"), hier, 3)
    assert trainable_params(model) == hier.params and len(model.dom_blocks) == 2 and len(model.blocks) == 2


@pytest.mark.slow
def test_a_preempted_hierarchical_run_resumes_bitwise(fitted, tmp_path):
    tok, tokens, target = fitted["direct_icecube"]
    train = (tokens, target)

    def trainer() -> Trainer:
        cfg = TrainConfig(loss="vmf", epochs=2, batch_size=16, lr=1e-3, warmup_steps=2, grad_accum=2, ema=True,
                          ema_decay=0.9, schedule="cosine", evaluate="best")  # fmt: skip
        return Trainer(_model(tok, dropout=0.1), cfg, "cpu", len(target), seed=3)

    whole = trainer()
    whole.fit(train, train, tmp_path / "a.pt")
    first = trainer()
    stop = lambda epoch, done: (epoch, done) == (1, 2) and os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
    with pytest.raises(Preempted):
        first.fit(train, train, tmp_path / "b.pt", on_batch=stop)
    resumed = trainer()
    resumed.fit(train, train, tmp_path / "b.pt")
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(whole.history) == strip(resumed.history)
    for (key, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("pulses", [PulsesConfig(), PulsesConfig(max=40, select="nonaux_first")])
def test_ragged_events_give_the_padded_events_tokens(long_file, name, pulses, monkeypatch):
    """Held ragged (the hierarchical model's layout), the same events fit the same tokenizer state and give,
    batch by batch, the padded table's tokens: equal at every real slot, zeros and mask False after them
    (transformed in several chunks, as a large split is)."""
    monkeypatch.setattr(parts_module, "TRANSFORM_SLOTS", 1000)
    padded = read_pulses(long_file, "train", tokenizer_for(_config(name)).features, pulses=pulses, sensors=True)
    ragged = read_pulses(long_file, "train", padded.feature_names, pulses=pulses, sensors=True, ragged=True)
    assert len(ragged.padded_chunks(1000)) > 3
    assert ragged.offsets[-1] == padded.real.sum() == len(ragged.cont) and len(ragged) == len(padded)
    dense = ragged.padded()
    for a, b in [(dense.cont, padded.cont), (dense.sensors, padded.sensors), (dense.real, padded.real),
                 (dense.length, padded.length), (dense.target, padded.target)]:  # fmt: skip
        assert np.array_equal(a, b)
    tok_p, tok_r = tokenizer_for(_config(name)), tokenizer_for(_config(name))
    tok_p.fit(padded)
    tok_r.fit(fit_view(ragged))
    assert tok_p.state_dict() == tok_r.state_dict()
    rows_p, rows_r = fit_view(padded), fit_view(ragged)  # a fit sees the same rows from either layout
    assert np.array_equal(rows_p.cont, rows_r.cont) and np.array_equal(rows_p.sensors, rows_r.sensors)
    want, got = tok_p.transform(padded) | sensor_tokens(padded), event_tokens(tok_r, ragged)
    assert set(want) == set(got) and all(isinstance(v, Ragged) for v in got.values())
    assert tok_r.out_of_range == tok_p.out_of_range
    idx = torch.tensor([5, 0, 17, 3])
    mask = want["mask"][idx]
    longest = int(mask.sum(1).max())
    for key, value in got.items():
        batch, full = value[idx], want[key][idx]
        assert batch.shape[1] == longest and torch.equal(batch[mask[:, :longest]], full[mask])
        assert not batch[~mask[:, :longest]].any()


def test_the_model_and_the_trainer_read_ragged_tokens_as_padded_ones(long_file, fitted, monkeypatch):
    """Training and evaluation on ragged tokens give bitwise the padded tokens' history and outputs; evaluated in
    batches of bounded slots, the same outputs up to float rounding (other batches, other attention buckets)."""
    tok, tokens, target = fitted["direct_icecube"]
    ragged = event_tokens(tok, read_pulses(long_file, "train", tok.features, sensors=True, ragged=True))
    cfg = TrainConfig(loss="vmf", epochs=2, batch_size=16, lr=1e-3, warmup_steps=2)
    runs = []
    for i, x in enumerate([tokens, ragged]):
        trainer = Trainer(_model(tok), cfg, "cpu", len(target), seed=1)
        trainer.fit((x, target), (x, target), long_file.parent / f"same{i}.pt")
        runs.append((trainer, trainer.outputs(x)))
    (a, out_a), (b, out_b) = runs
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history) and torch.equal(out_a, out_b)
    monkeypatch.setattr(trainer_module, "EVAL_SLOTS", 2000)
    assert len(ragged["mask"].batches(4096, 2000)) > 5
    torch.testing.assert_close(b.outputs(ragged), out_a, rtol=1e-5, atol=1e-5)
