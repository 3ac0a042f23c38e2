"""Transformer: pooling ignores padding, every parameter trains, budgets match across tokenizers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import PRESETS, make_events

from expmatrix.config import JobConfig, ModelConfig, Presets, TrainConfig
from expmatrix.layers.blocks import rotate
from expmatrix.layers.packing import Packing
from expmatrix.models.sizing import BudgetError, build_model, solve_size
from expmatrix.models.transformer import pool, rotary, trainable_params
from expmatrix.tokenizers import build_tokenizer
from expmatrix.training.trainer import Trainer

PRESET_NAMES = Presets(PRESETS).available()
pytestmark = pytest.mark.usefixtures("one_thread")


# Code tokenizers fitted on the four hand-made events below: codebooks those few objects can fill
FEW_OBJECTS = {
    "kmeans": {"codes": 4},
    "fsq": {"levels": [3, 3]},
    "vqvae": {"codebook_size": 4, "epochs": 1, "holdout": 0.25, "min_utilisation": 0.0},
}


def _tokenizer(name: str, features=("pT", "eta", "phi"), use_met=True):
    raw = Presets(PRESETS).get(name, "test")
    cfg = JobConfig.model_validate({"data": {}, "tokenizer": {**raw, **FEW_OBJECTS.get(raw["kind"], {})}}).tokenizer
    return build_tokenizer(cfg, features, use_met)


def _events(n_slots: int, seed: int = 0):
    """Four events with 1..4 real objects, padded to `n_slots` slots; fitted on themselves."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((4, n_slots), dtype=int)
    cont = np.zeros((4, n_slots, 3))
    for i in range(4):
        ids[i, : i + 1] = rng.integers(1, 8, size=i + 1)
        cont[i, : i + 1] = np.column_stack(
            [rng.uniform(20, 200, i + 1), rng.normal(0, 1, i + 1), rng.uniform(-3, 3, i + 1)]
        )
    return make_events(ids, cont, rng.uniform([10, -3], [100, 3], size=(4, 2)))


def test_masked_pooling_ignores_padded_slots():
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    h_junk = h.clone()
    h_junk[~mask] = 1e4
    for how in ("mean", "max"):
        assert torch.equal(pool(h, mask, how), pool(h_junk, mask, how))
    torch.testing.assert_close(pool(h, mask, "mean")[1], h[1, 0])  # a single real object works


POOLINGS = ["cls", "mean", "max"]
POSITIONS = ["sinusoidal", "learned", "rope", "none"]


def _model(tok, seq_len: int, n_outputs: int = 2, **cfg):
    torch.manual_seed(0)
    return build_model(tok, ModelConfig(layers=2, heads=4, **cfg), (16, 32), n_outputs, seq_len)


@pytest.mark.parametrize("name,pooling,position", list(itertools.product(PRESET_NAMES, POOLINGS, POSITIONS)))
def test_appending_padded_slots_does_not_change_the_output(name, pooling, position):
    tok = _tokenizer(name)
    short, long = _events(4), _events(7)  # same objects, 3 more empty slots
    tok.fit(short)
    long_tokens = tok.transform(long)
    model = _model(tok, long_tokens["mask"].shape[1], pooling=pooling, position=position).eval()
    with torch.no_grad():
        a, b = model(tok.transform(short)), model(long_tokens)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block,position", [("normformer", "rope"), ("prenorm", "learned"), ("prenorm", "sinusoidal")])
def test_packed_real_tokens_give_the_padded_computation(block, position):
    """The CPU path computes only real tokens; outputs and gradients equal those over all slots."""
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 8, size=(40, 12)) * (rng.uniform(size=(40, 12)) < rng.uniform(0.1, 1, size=(40, 1)))
    ids[:, 0] = 1  # every event has an object; the others are scattered over the slots, with gaps
    cont = np.stack([rng.uniform(20, 200, ids.shape), rng.normal(0, 1, ids.shape), rng.uniform(-3, 3, ids.shape)], -1)
    events = make_events(ids, cont, rng.uniform([10, -3], [100, 3], size=(40, 2)))
    tok = _tokenizer("direct")
    tok.fit(events)
    tokens = tok.transform(events)
    model = _model(tok, tokens["mask"].shape[1], block=block, position=position, pooling="mean")
    runs = []
    for packed in (True, False):
        model.packed = packed
        model.zero_grad()
        out = model(tokens)
        out.square().sum().backward()
        runs.append((out.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_rotary_angles_match_rotary_embedding_torch():
    """Rope is applied per token (packed layout) with the library's angles and pair convention."""
    rope = rotary(ModelConfig(position="rope", rope_theta=500.0), head_dim=8)
    q = torch.randn(2, 3, 7, 8)  # (B, H, T, D)
    angles = rope(torch.arange(7.0))[None, :, None, :]  # (1, T, 1, D)
    ours = rotate(q.transpose(1, 2), (angles.cos(), angles.sin())).transpose(1, 2)
    torch.testing.assert_close(ours, rope.rotate_queries_or_keys(q))


HEADS = [(2, "cross_entropy"), (5, "cross_entropy"), (3, "vmf")]  # binary, 5-class, a 3-d direction
GRADIENT_CASES = [
    (name, pooling, position, block, head)
    for name, pooling, position, block, head in itertools.product(
        PRESET_NAMES, POOLINGS, POSITIONS, ["normformer", "prenorm"], HEADS
    )
    if (position, block) == ("sinusoidal", "normformer") or (pooling, head) == ("mean", HEADS[0])
]


@pytest.mark.parametrize("name,pooling,position,block,head", GRADIENT_CASES)
def test_every_parameter_gets_a_gradient_in_the_first_step(name, pooling, position, block, head):
    """The research code created an embedding lazily, after the optimizer: it never trained."""
    tok = _tokenizer(name)
    events = _events(4)
    tok.fit(events)
    tokens = tok.transform(events)
    n_outputs, loss = head
    model = _model(tok, tokens["mask"].shape[1], n_outputs, pooling=pooling, position=position, block=block)
    trainer = Trainer(model, TrainConfig(loss=loss, class_weights="none", warmup_steps=0), "cpu", n_train=4)
    in_opt = {id(p) for g in trainer.opt.param_groups for p in g["params"]}
    assert [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_opt] == []
    target = torch.tensor([0, 1, 0, 1]) if loss == "cross_entropy" else torch.eye(3)[[0, 1, 2, 0]]
    loss_sum, weight = trainer.loss(model(tokens), target)
    (loss_sum / weight).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and not (p.grad is not None and p.grad.any())]
    if name.startswith("binned"):  # only the table rows of tokens seen in this batch can move
        no_grad = [n for n in no_grad if not n.startswith("embed.table")]
    assert no_grad == []
    fixed = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert fixed == (["rope.freqs"] if position == "rope" else [])  # rotary frequencies are constants


def test_normformer_adds_head_scale_and_two_layer_norms_per_block():
    tok = _tokenizer("direct")
    names = {
        b: {n.split(".", 2)[2] for n, _ in _model(tok, 20, block=b).named_parameters() if n.startswith("blocks.0.")}
        for b in ("normformer", "prenorm")
    }
    extra = {"attn.head_scale", "ln_attn.weight", "ln_attn.bias", "ln_ff_mid.weight", "ln_ff_mid.bias"}
    assert names["normformer"] - names["prenorm"] == extra and names["prenorm"] < names["normformer"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("target", [100_000, 400_000])
def test_parameter_budget_is_matched_across_tokenizers(name, target):
    for features, met in itertools.product([("pT", "eta", "phi"), ("E", "pT", "eta", "phi")], [True, False]):
        tok = _tokenizer(name, features, met)
        size = solve_size(tok, ModelConfig(target_params=target), 2)
        real = trainable_params(build_model(tok, ModelConfig(target_params=target), size, 2))
        assert real == size.params
        assert abs(size.params - target) / target < 0.02, (name, features, met, size)
        assert size.d_model % 8 == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("block,position", [("prenorm", "rope"), ("normformer", "learned"), ("prenorm", "none")])
def test_parameter_budget_holds_for_every_block_and_position(name, block, position):
    cfg = ModelConfig(target_params=400_000, block=block, position=position, pooling="cls")
    tok = _tokenizer(name, ("E", "pT", "eta", "phi"), True)
    size = solve_size(tok, cfg, 2, seq_len=20)
    assert trainable_params(build_model(tok, cfg, size, 2, seq_len=20)) == size.params
    assert abs(size.params - 400_000) / 400_000 < 0.02
    assert size.d_model % (16 if position == "rope" else 8) == 0  # rope needs an even head width


def test_an_unreachable_budget_is_reported_before_training():
    huge = {"kind": "binned", "name": "huge", "n_bins": 12}  # 7 * 12^4 = 145,152 joint tokens
    cfg = JobConfig.model_validate({"data": {}, "tokenizer": huge}).tokenizer
    tok = build_tokenizer(cfg, ("E", "pT", "eta", "phi"), True)
    with pytest.raises(BudgetError, match=r"target_params=100000 within 2%: closest is \d+ at width 8, FFN \d+, of"):
        solve_size(tok, ModelConfig(target_params=100_000), 2)


def test_an_event_without_any_real_token_is_an_error_not_nan():
    mask = torch.tensor([[True, True, False], [False, False, False]])
    with pytest.raises(ValueError, match="1 events of the batch have no real token"):
        Packing(mask, packed=True)
