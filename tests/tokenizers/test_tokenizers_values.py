"""Continuous and integer tokenizers: exact values and codes on hand-made tables (4tops and IceCube)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PRESETS, make_events

from expmatrix.config import DirectTokenizerConfig, IntegerTokenizerConfig, JobConfig, Presets
from expmatrix.tokenizers import TokenizerError, build_tokenizer

ICECUBE = PRESETS / "icecube"
PULSES = ("time", "charge", "x", "y", "z")


def preset(name: str, folder=PRESETS):
    return JobConfig.model_validate({"data": {}, "tokenizer": Presets(folder).get(name, "test")}).tokenizer


def direct(transforms: dict, **kw) -> DirectTokenizerConfig:
    return DirectTokenizerConfig.model_validate({"kind": "direct", "name": "d", "transforms": transforms, **kw})


def test_direct_preset_standardizes_log_energies_of_real_objects():
    tok = build_tokenizer(preset("direct"), ("pT", "eta", "phi"), use_met=True)
    cont = [[[np.e, 1, 0], [np.e**3, -1, 2], [0, 0, 0]]]  # log pT = 1, 3 -> mean 2, std 1
    events = make_events([[1, 2, 0]], cont, [[np.e**2, 0.5]])
    tok.fit(events)
    assert tok.center["pT"] == pytest.approx(2) and tok.factor["pT"] == pytest.approx(1)
    out = tok.transform(events)
    np.testing.assert_allclose(out["x"][0].numpy(), [[-1, 1, -1], [1, -1, 1], [0, 0, 0]], atol=1e-6)
    assert out["g"].shape == (1, 2) and out["mask"].tolist() == [[True, True, True, False]]


def test_icecube_constants_and_the_sentinel_for_invalid_charge():
    tok = build_tokenizer(preset("direct_icecube", ICECUBE), PULSES, use_met=False)
    # time 1e4 -> 0, 4e4 -> 1; charge 1000 -> log10/3 = 1, charge 0 -> invalid; x 500 -> 1, z -250 -> -0.5
    cont = [[[1e4, 1000, 500, 0, -250], [4e4, 0, 0, 0, 0], [0, 0, 0, 0, 0]]]
    events = make_events([[1, 1, 0]], cont, features=PULSES)
    tok.fit(events)
    x = tok.transform(events)["x"][0].numpy()  # (O, 5 values + 5 validity flags)
    np.testing.assert_allclose(x[0], [0, 1, 1, 0, -0.5, 1, 1, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(x[1], [1, -5, 0, 0, 0, 1, -1, 1, 1, 1], atol=1e-6)
    assert (x[2] == 0).all()  # the empty slot: values and flags 0
    emb = tok.embedding(8)
    assert emb.object_type is None and emb.value.proj.in_features == 10


def test_robust_fit_clip_and_log1p():
    cfg = direct(
        {
            "pT": {"fit": "robust", "clip": [-1, 1]},
            "eta": {"op": "log1p", "shift": 1.0, "scale": 2.0},
            "phi": {"op": "log10", "fit": "standardize"},
        }
    )
    tok = build_tokenizer(cfg, ("pT", "eta", "phi"), use_met=False)
    pt = np.arange(1, 101, dtype=float)
    cont = np.stack([pt, np.full(100, np.e - 1), np.full(100, 10.0)], axis=-1)[None]
    tok.fit(make_events(np.ones((1, 100), int), cont))
    p16, p50, p84 = np.quantile(pt, [0.16, 0.5, 0.84])
    assert tok.center["pT"] == pytest.approx(p50) and tok.factor["pT"] == pytest.approx(1 / max(p84 - p50, p50 - p16))
    assert tok.factor["phi"] == 1.0  # zero spread: the factor stays 1, never a division by 0
    out = tok.transform(make_events([[1, 1]], [[[p50 + 10, np.e - 1, 10], [1000, 0, 10]]]))["x"][0].numpy()
    spread = max(p84 - p50, p50 - p16)
    np.testing.assert_allclose(out, [[10 / spread, 0, 0], [1, -2, 0]], atol=1e-6)  # 1000 clipped to 1


def test_invalid_inputs_are_errors_that_name_the_feature():
    tok = build_tokenizer(preset("direct"), ("pT", "eta", "phi"), use_met=False)
    with pytest.raises(TokenizerError, match="feature pT: 1 non-positive values cannot take a log"):
        tok.fit(make_events([[1, 1]], [[[10, 0, 0], [-1, 0, 0]]]))
    with pytest.raises(TokenizerError, match="feature eta: 1 NaN/inf values"):
        tok.fit(make_events([[1, 1]], [[[10, 0, 0], [3, np.nan, 0]]]))
    tok.fit(make_events([[1, 0]], [[[10, 0, 0], [-1, np.nan, 0]]]))  # junk in an empty slot is never read
    with pytest.raises(TokenizerError, match=r"no transform for features \['phi'\]"):
        build_tokenizer(direct({"pT": {}, "eta": {}}), ("pT", "eta", "phi"), use_met=False)


@pytest.mark.parametrize("kind", ["linear", "mlp", "periodic"])
def test_value_embeddings_train_every_parameter(kind):
    tok = build_tokenizer(direct({"pT": {"op": "log"}, "eta": {}, "phi": {}, "MET": {}, "MET_phi": {}}, embedding=kind),
                          ("pT", "eta", "phi"), use_met=True)  # fmt: skip
    events = make_events([[1, 3, 0], [2, 0, 0]], [[[20, 1, 2], [40, -1, 0], [0, 0, 0]]] * 2, [[30, 1], [50, -1]])
    tok.fit(events)
    emb = tok.embedding(12)
    h, mask = emb(tok.transform(events))
    assert h.shape == (2, 4, 12) and mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    h[mask].pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in emb.parameters())
    n_periodic = sum(p.numel() for n, p in emb.named_parameters() if n.endswith("freq"))
    assert n_periodic == (3 * 8 + 2 * 8 if kind == "periodic" else 0)


def test_integer_fourtops_codes_by_hand():
    tok = build_tokenizer(preset("integer_fourtops"), ("pT", "eta", "phi"), use_met=True)
    pt = np.arange(1, 33, dtype=float).reshape(16, 2)  # 32 pTs: 16 quantile bins of two values each
    train = make_events(np.ones((16, 2), int), np.stack([pt, 0 * pt, 0 * pt], -1), np.tile([[10.0, 0]], (16, 1)))
    tok.fit(train)
    # obj 7: code 8; pT 3.5 -> bin 2 (edges 1 + 31k/16) -> 3; eta -2.0 -> round(5) -> 7; phi -3.1 -> round(0.106) -> 2
    # obj 1: code 2; pT 40 -> bin 16 (counted) -> 17; eta 2.5 -> 50 -> 52; phi pi -> 16 -> 18
    events = make_events([[7, 1, 0]], [[[3.5, -2.0, -3.1], [40, 2.5, np.pi], [0, 0, 0]]], [[10.0, 0.0]])
    out = tok.transform(events)
    assert out["codes"][0].tolist() == [[8, 3, 7, 2], [2, 17, 52, 18], [0, 0, 0, 0]]
    assert out["g"].tolist() == [[2 + 15, 2 + 8]]  # MET at the top edge -> bin 16; phi 0 -> round(8) = 8
    assert tok.out_of_range == {"pT": 1, "eta": 0, "phi": 0, "MET": 0, "MET_phi": 0}
    assert tok.embedding(8).parts[0].num_embeddings == 9 and tok.part_vocabs == [9, 18, 53, 19]


def test_integer_icecube_rules_on_a_hand_made_table():
    names = ("time", "charge", "sensor_id", "auxiliary")
    tok = build_tokenizer(preset("integer_icecube", ICECUBE), names, use_met=False)
    charge = np.arange(1, 65, dtype=float)  # 64 charges: 32 bins of two
    train = np.stack([np.arange(64.0), charge, np.arange(64.0), np.zeros(64)], -1)[None]
    tok.fit(make_events(np.ones((1, 64), int), train, features=names))
    # first pulse at t = 10000 ns: times after it 500, 0, 512.6, 20500 ns -> 10 ns bins 50, 0, 51, 2050 -> clipped 1999
    t = [10500, 10000, 10512.6, 30500]
    rows = [[t[0], 3.2, 5159, 1], [t[1], 1.0, 0, 0], [t[2], 64, 17, 0], [t[3], 100, 4, 1], [0, 0, 0, 0]]
    out = tok.transform(make_events([[1, 1, 1, 1, 0]], [rows], features=names))["codes"][0]
    assert out[:, 0].tolist() == [52, 2, 53, 2001, 0]
    assert out[:, 1].tolist() == [3, 2, 33, 33, 0]  # charge bins 2, 1, 32, 32 (100: above the fitted range)
    assert out[:, 2].tolist() == [5161, 2, 19, 6, 0] and out[:, 3].tolist() == [3, 2, 2, 3, 0]
    assert tok.out_of_range == {"time": 1, "charge": 1}
    assert tok.part_vocabs == [2002, 34, 5162, 4]  # sensor_id: 5160 + padding + mask
    bad = make_events([[1, 1]], [[[0, 1, 5160, 0], [0, 1, 2.5, 0]]], features=names)
    with pytest.raises(TokenizerError, match=r"feature sensor_id: 2 values are not integers in 0..5159, e.g. 5160.0"):
        tok.transform(bad)



def test_integer_icecube_xyz_codes_positions_in_10_m_bins():
    names = ("time", "charge", "x", "y", "z", "auxiliary")
    tok = build_tokenizer(preset("integer_icecube_xyz", ICECUBE), names, use_met=False)
    train = np.stack([np.arange(64.0), np.arange(1, 65.0), *np.zeros((4, 64))], -1)[None]
    tok.fit(make_events(np.ones((1, 64), int), train, features=names))
    # round((v + 600) / 10): -562.5 -> 4 (3.75), 541.3 -> 114, -500 -> 10, 0 -> 60; 610 -> 121: clipped to 120
    rows = [[1e4, 1, -562.5, 541.3, -500, 0], [1e4 + 5, 1, 0, 0, 610, 1]]
    out = tok.transform(make_events([[1, 1]], [rows], features=names))["codes"][0]
    assert out[:, 2:5].tolist() == [[2 + 4, 2 + 114, 2 + 10], [2 + 60, 2 + 60, 2 + 120]]
    assert tok.out_of_range == {"time": 0, "x": 0, "y": 0, "z": 1, "charge": 0}
    assert tok.part_vocabs == [2002, 34, 123, 123, 123, 4]

def test_integer_rule_errors():
    cfg = IntegerTokenizerConfig.model_validate(
        {"kind": "integer", "name": "i", "rules": {"pT": {"kind": "round", "codes": 4}, "MET": {"kind": "round",
         "codes": 4, "relative_to_first": True}, "MET_phi": {"kind": "round", "codes": 4}}}
    )  # fmt: skip
    with pytest.raises(TokenizerError, match=r"relative_to_first needs objects; \['MET'\] are globals"):
        build_tokenizer(cfg, ("pT",), use_met=True)
    tok = build_tokenizer(cfg, ("pT",), use_met=False)
    tok.fit(make_events([[1]], [[[1.0]]], features=("pT",)))  # round rules fit nothing
    assert tok.state_dict()["edges"] == {}
    codes = tok.transform(make_events([[1, 1, 1]], [[[-0.6], [1.4], [9.0]]], features=("pT",)))["codes"]
    assert codes[0, :, 1].tolist() == [2, 3, 5] and tok.out_of_range == {"pT": 2}  # -1 and 9 are clipped
    assert torch.equal(codes[0, :, 0], torch.tensor([2, 2, 2]))  # object type 1 -> 2
