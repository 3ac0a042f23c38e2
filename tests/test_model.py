"""Transformer: pooling ignores padding, every parameter trains, budgets match across tokenizers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import PRESETS, make_events

from expmatrix.matrix import Presets
from expmatrix.models.sizing import build_model, solve_size
from expmatrix.models.transformer import pool
from expmatrix.spec import JobConfig, ModelConfig
from expmatrix.tokenizers import build_tokenizer

PRESET_NAMES = Presets(PRESETS).available()


def _tokenizer(name: str, features=("pT", "eta", "phi"), use_met=True):
    cfg = JobConfig.model_validate({"data": {}, "tokenizer": Presets(PRESETS).get(name, "test")}).tokenizer
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


@pytest.mark.parametrize("name,pooling", list(itertools.product(PRESET_NAMES, ["cls", "mean", "max"])))
def test_appending_padded_slots_does_not_change_the_output(name, pooling):
    tok = _tokenizer(name)
    short, long = _events(4), _events(7)  # same objects, 3 more empty slots
    tok.fit(short)
    torch.manual_seed(0)
    model = build_model(tok, ModelConfig(target_params=20000, layers=2, heads=4, pooling=pooling), (16, 32), 2).eval()
    with torch.no_grad():
        a, b = model(tok.transform(short)), model(tok.transform(long))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,pooling", list(itertools.product(PRESET_NAMES, ["cls", "mean", "max"])))
def test_every_parameter_gets_a_gradient_in_the_first_step(name, pooling):
    """The research code created an embedding lazily, after the optimizer: it never trained."""
    tok = _tokenizer(name)
    events = _events(4)
    tok.fit(events)
    model = build_model(tok, ModelConfig(layers=2, heads=4, pooling=pooling), (16, 32), 2)
    opt = torch.optim.AdamW(model.parameters())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in model.parameters())
    F.cross_entropy(model(tok.transform(events)), torch.tensor([0, 1, 0, 1])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    if name.startswith("binned"):  # only the table rows of tokens seen in this batch can move
        no_grad = [n for n in no_grad if not n.startswith("embed.table")]
    assert no_grad == []


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("target", [100_000, 400_000])
def test_parameter_budget_is_matched_across_tokenizers(name, target):
    for features, met in itertools.product([("pT", "eta", "phi"), ("E", "pT", "eta", "phi")], [True, False]):
        tok = _tokenizer(name, features, met)
        size = solve_size(tok, ModelConfig(target_params=target), 2)
        real = sum(p.numel() for p in build_model(tok, ModelConfig(target_params=target), size, 2).parameters())
        assert real == size.params
        assert abs(size.params - target) / target < 0.02, (name, features, met, size)
        assert size.d_model % 8 == 0
