"""Tokenizers: exact tokens on hand-made tables, equal-frequency bins, no leakage, state round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_events

from expmatrix.data import load_splits
from expmatrix.spec import BinnedTokenizerConfig, DataConfig, DirectTokenizerConfig
from expmatrix.tokenizers import TokenizerError, build_tokenizer

AMBRE = BinnedTokenizerConfig(kind="binned", name="binned_ambre5")
DIRECT = DirectTokenizerConfig(kind="direct", name="direct")


def _train_table(n_features: int = 3):
    """Ten real objects over 5 events (2 slots each) plus an empty slot per event.

    pT = 10..100 -> quantile edges 28, 46, 64, 82; eta = pT/50 - 1 -> edges -0.44, -0.08, 0.28, 0.64;
    E = 2 * pT -> edges 56, 92, 128, 164; MET = 100..500 -> edges 180, 260, 340, 420.
    """
    pt = np.arange(10, 101, 10, dtype=float).reshape(5, 2)
    cols = [pt / 50 - 1, np.zeros_like(pt)]  # eta, phi
    feats = [pt, *cols] if n_features == 3 else [2 * pt, pt, *cols]
    cont = np.stack(feats, axis=-1)
    cont = np.concatenate([cont, np.full((5, 1, n_features), 1e6)], axis=1)  # empty slot holds junk
    ids = np.array([[1, 2, 0]] * 5)
    names = ("pT", "eta", "phi") if n_features == 3 else ("E", "pT", "eta", "phi")
    met = np.stack([np.arange(100, 501, 100), np.zeros(5)], axis=1)
    return make_events(ids, cont, met, features=names)


def test_ambre_tokens_of_a_hand_computed_table():
    tok = build_tokenizer(AMBRE, ("pT", "eta", "phi"), use_met=True)
    tok.fit(_train_table())
    assert tok.edges["pT"] == pytest.approx([28, 46, 64, 82])
    assert tok.edges["MET"] == pytest.approx([180, 260, 340, 420])
    # (obj, pT, eta, phi) -> bins by hand -> 125*(obj-1) + 25*(bpT-1) + 5*(beta-1) + bphi
    rows = [
        [(1, 15, -2.0, -3.1), (7, 95, 2.4, 3.0), (0, 0, 0, 0)],  # bins (1,1,1), (5,5,5) -> 1, 875, pad 0
        [
            (2, 50, 0.0, 0.0),
            (5, 30, -0.3, np.pi),
            (0, 0, 0, 0),
        ],  # (3,3,3) -> 188; (2,2,1: phi=pi wraps) -> 4*125+25+5+1
    ]
    ids = [[o for o, *_ in r] for r in rows]
    cont = [[v for _, *v in r] for r in rows]
    met = [[100, -np.pi], [450, 1.0]]  # MET bins 1, 5; MET-phi bins 1, (1+pi)/(2pi/5) -> 4
    tokens = tok.transform(make_events(ids, cont, met))["tokens"].tolist()
    assert tokens == [[876, 881, 1, 875, 0], [880, 884, 188, 531, 0]]  # MET, MET-phi first
    assert tok.vocab_size == 886


def test_five_vector_generalization():
    tok = build_tokenizer(AMBRE, ("E", "pT", "eta", "phi"), use_met=True)
    tok.fit(_train_table(4))
    assert tok.edges["E"] == pytest.approx([56, 92, 128, 164])
    # obj 2, E 80 (bin 2), pT 50 (3), eta 0 (3), phi 0 (3): 625*1 + 125*1 + 25*2 + 5*2 + 3
    out = tok.transform(make_events([[2]], [[[80, 50, 0.0, 0.0]]], [[700, 3.0]], features=tok.features))
    assert out["tokens"].tolist() == [[4375 + 5, 4375 + 5 + 5, 813]]
    assert tok.vocab_size == 4386
    assert out["mask"].tolist() == [[True, True, True]]


def test_without_met_there_are_no_global_tokens():
    tok = build_tokenizer(AMBRE, ("pT", "eta", "phi"), use_met=False)
    tok.fit(_train_table())
    out = tok.transform(make_events([[1, 0]], [[[15, -2, -3.1], [0, 0, 0]]]))
    assert out["tokens"].tolist() == [[1, 0]] and out["mask"].tolist() == [[True, False]]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cfg = DataConfig(cont_features=[0, 1, 2, 3], synthetic={"events": 20000, "seed": 2})
    return load_splits(cfg, "synthetic", tmp_path_factory.mktemp("cache"))


def test_quantile_bins_hold_equal_shares_and_phi_bins_equal_widths(splits):
    """The clip-after-digitize bug left bin 5 empty and bin 1 with 40%; pi/5-wide phi bins put 60% in one bin."""
    train = splits["train"]
    tok = build_tokenizer(AMBRE, train.feature_names, use_met=True)
    tok.fit(train)
    real = train.real
    for f in ("E", "pT", "eta"):
        bins = tok._bins(train.cont[:, :, train.feature_names.index(f)][real], f)
        shares = np.bincount(bins, minlength=6)[1:] / real.sum()
        np.testing.assert_allclose(shares, 0.2, atol=0.002, err_msg=f)
    phi_bins = tok._bins(train.cont[:, :, 3][real], "phi")
    np.testing.assert_allclose(np.bincount(phi_bins, minlength=6)[1:] / real.sum(), 0.2, atol=0.02)
    met_shares = np.bincount(tok._bins(train.globals_[:, 0], "MET"), minlength=6)[1:] / len(train)
    np.testing.assert_allclose(met_shares, 0.2, atol=0.002)


@pytest.mark.parametrize("config", [DIRECT, AMBRE], ids=["direct", "binned"])
def test_fit_uses_only_real_training_entries_and_round_trips(config, splits):
    train = splits["train"]
    tok = build_tokenizer(config, train.feature_names, use_met=True)
    tok.fit(train)
    junk = make_events(
        train.ids, np.where(train.real[..., None], train.cont, 7e5), train.globals_, train.label, train.feature_names
    )
    other = build_tokenizer(config, train.feature_names, use_met=True)
    other.fit(junk)  # padded slots hold junk: the fitted state must not move
    assert other.state_dict() == tok.state_dict()
    loaded = build_tokenizer(config, train.feature_names, use_met=True)
    loaded.load_state_dict(json.loads(json.dumps(tok.state_dict())))
    a, b = tok.transform(splits["test"]), loaded.transform(splits["test"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_direct_standardizes_real_objects_and_zeroes_padding(splits):
    train = splits["train"]
    tok = build_tokenizer(DIRECT, train.feature_names, use_met=True)
    tok.fit(train)
    out = tok.transform(train)
    real = torch.from_numpy(train.real)
    x = out["x"]  # (N, O, F)
    assert torch.all(x[~real] == 0)
    np.testing.assert_allclose(x[real].mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(x[real].std(0).numpy(), 1, atol=1e-3)
    pt = train.cont[:, :, 1][train.real]
    assert tok.mean["pT"] == pytest.approx(np.log(pt).mean(), rel=1e-5)
    assert out["mask"].shape == (len(train), 19) and out["mask"][:, 0].all()  # MET token always real
    np.testing.assert_allclose(out["g"].mean(0).numpy(), 0, atol=1e-4)


def test_bad_inputs_are_named():
    tok = build_tokenizer(DIRECT, ("pT", "eta", "phi"), use_met=False)
    with pytest.raises(TokenizerError, match="feature pT: 1 non-positive values cannot take a log"):
        tok.fit(make_events([[1, 1]], [[[10, 0, 0], [-1, 0, 0]]]))
    with pytest.raises(TokenizerError, match=r"object-type ids outside 0..7: \[9\]"):
        tok.fit(make_events([[9]], [[[10, 0, 0]]]))
    bad = BinnedTokenizerConfig(kind="binned", name="b", rules={"pT": "quantile", "eta": "quantile"})
    with pytest.raises(TokenizerError, match=r"no binning rule for features \['phi'\]"):
        build_tokenizer(bad, ("pT", "eta", "phi"), use_met=False)
