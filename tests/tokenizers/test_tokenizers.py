"""Binned tokenizers: exact tokens on hand-made tables, equal-frequency bins, bad input, edge options."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PRESETS, make_events

from expmatrix.config import BinnedTokenizerConfig, DataConfig, FactorizedTokenizerConfig, JobConfig, Presets, SpecError
from expmatrix.data import load_splits
from expmatrix.tokenizers import TokenizerError, build_tokenizer
from expmatrix.tokenizers.quantiles import SAMPLE, QuantileSketch, exact_quantiles, exact_quantiles_stream

AMBRE = BinnedTokenizerConfig(kind="binned", name="binned_ambre5")


def preset(name: str, folder=PRESETS):
    return JobConfig.model_validate({"data": {}, "tokenizer": Presets(folder).get(name, "test")}).tokenizer


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
    return make_events(ids, cont, met, label=[0, 0, 1, 1, 0], features=names)


# (obj, pT, eta, phi) -> bins by hand -> 125*(obj-1) + 25*(bpT-1) + 5*(beta-1) + bphi
HAND_ROWS = [
    [(1, 15, -2.0, -3.1), (7, 95, 2.4, 3.0), (0, 0, 0, 0)],  # bins (1,1,1), (5,5,5) -> 1, 875, pad 0
    [(2, 50, 0.0, 0.0), (5, 30, -0.3, np.pi), (0, 0, 0, 0)],  # (3,3,3) -> 188; (2,2,1: phi=pi wraps) -> 531
]
HAND_MET = [[100, -np.pi], [450, 1.0]]  # MET bins 1, 5; MET-phi bins 1, floor((1+pi)/(2pi/5)) + 1 = 4


def _hand_events():
    ids = [[o for o, *_ in r] for r in HAND_ROWS]
    cont = [[v for _, *v in r] for r in HAND_ROWS]
    return make_events(ids, cont, HAND_MET)


def test_ambre_tokens_of_a_hand_computed_table():
    tok = build_tokenizer(AMBRE, ("pT", "eta", "phi"), use_met=True)
    tok.fit(_train_table())
    assert tok.binner.edges["pT"] == pytest.approx([28, 46, 64, 82])
    assert tok.binner.edges["eta"] == pytest.approx([-0.44, -0.08, 0.28, 0.64], abs=1e-6)
    assert tok.binner.edges["MET"] == pytest.approx([180, 260, 340, 420])
    assert tok.transform(_hand_events())["tokens"].tolist() == [[876, 881, 1, 875, 0], [880, 884, 188, 531, 0]]
    assert tok.thesis_rows(_hand_events()).tolist() == [[1, 875, 0, 876, 881], [188, 531, 0, 880, 884]]
    assert tok.vocab_size == 886
    decoded = tok.decode(np.array([1, 875, 188, 531, 0, 876]))
    assert decoded["type"].tolist() == [1, 7, 2, 5, 0, 0] and decoded["pT"].tolist() == [1, 5, 3, 2, 0, 0]
    assert decoded["phi"].tolist() == [1, 5, 3, 1, 0, 0]


def test_five_vector_generalization():
    tok = build_tokenizer(AMBRE, ("E", "pT", "eta", "phi"), use_met=True)
    tok.fit(_train_table(4))
    assert tok.binner.edges["E"] == pytest.approx([56, 92, 128, 164])
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
    assert tok.vocab_size == 876


def test_mixed_radix_with_per_feature_bins_and_fixed_width():
    """pT: 3 quantile bins, eta: 4 fixed bins over [-2, 2), phi: 2 cyclic bins: radix (24, 8, 2, 1)."""
    cfg = BinnedTokenizerConfig.model_validate(
        {
            "kind": "binned",
            "name": "mixed",
            "rules": {
                "pT": {"kind": "quantile", "bins": 3},
                "eta": {"kind": "fixed", "range": [-2, 2], "bins": 4, "width": 1.0},
                "phi": {"kind": "cyclic", "bins": 2},
            },
        }
    )
    tok = build_tokenizer(cfg, ("pT", "eta", "phi"), use_met=False)
    tok.fit(_train_table())  # pT edges at 1/3, 2/3 of 10..100: 40, 70
    assert tok.binner.edges["pT"] == pytest.approx([40, 70])
    # obj 3, pT 70 (bin 3: an edge value goes up), eta 1.5 (4), phi -0.1 (1) -> 48 + 16 + 6 + 0 + 1
    # obj 1, pT 39 (1), eta -7 (1: below the range, counted), phi 0 (2) -> 0 + 0 + 0 + 1 + 1
    out = tok.transform(make_events([[3, 1]], [[[70, 1.5, -0.1], [39, -7, 0.0]]]))
    assert out["tokens"].tolist() == [[71, 2]]
    assert tok.vocab_size == 7 * 24 + 1
    assert tok.out_of_range == {"eta": 1, "pT": 0}


def test_factorized_codes_are_the_joint_bins():
    cfg = FactorizedTokenizerConfig(kind="factorized", name="f")
    joint, fact = (build_tokenizer(c, ("pT", "eta", "phi"), use_met=True) for c in (AMBRE, cfg))
    joint.fit(_train_table())
    fact.fit(_train_table())
    out = fact.transform(_hand_events())
    assert out["codes"].tolist() == [
        [[1, 1, 1, 1], [7, 5, 5, 5], [0, 0, 0, 0]],
        [[2, 3, 3, 3], [5, 2, 2, 1], [0, 0, 0, 0]],
    ]
    assert out["g"].tolist() == [[1, 1], [5, 4]]
    decoded = joint.decode(joint.transform(_hand_events())["tokens"].numpy()[:, 2:])
    np.testing.assert_array_equal(np.stack([decoded[k] for k in ("type", "pT", "eta", "phi")], -1), out["codes"])
    emb = fact.embedding(8)
    assert [t.num_embeddings for t in emb.parts] == [8, 6, 6, 6] and [t.num_embeddings for t in emb.globals] == [6, 6]
    h, mask = emb(out)
    assert h.shape == (2, 5, 8) and mask.tolist() == [[True, True, True, True, False]] * 2


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cfg = DataConfig(cont_features=[0, 1, 2, 3], synthetic={"events": 20000, "seed": 2})
    return load_splits(cfg, "synthetic", tmp_path_factory.mktemp("cache"))


def _shares(codes: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(codes.ravel(), minlength=n)[:n] / codes.size


def test_quantile_bins_hold_equal_shares_and_phi_bins_equal_widths(splits):
    """The clip-after-digitize bug left bin 5 empty and bin 1 with 40%; pi/5-wide phi bins put 60% in one bin."""
    train = splits["train"]
    tok = build_tokenizer(preset("binned_ambre5"), train.feature_names, use_met=True)
    tok.fit(train)
    real = train.real
    for k, f in enumerate(train.feature_names):
        shares = _shares(tok.binner.codes(f, train.cont[:, :, k][real]), 5)
        np.testing.assert_allclose(shares, 0.2, atol=0.002 if f != "phi" else 0.02, err_msg=f)
    np.testing.assert_allclose(_shares(tok.binner.codes("MET", train.globals_[:, 0]), 5), 0.2, atol=0.002)
    # the phi bins are 2*pi/5 wide over [-pi, pi): their edges sit at -pi + k * 2*pi/5
    phi = np.float32(-np.pi + np.array([0.4, 1.2, 2.0, 2.4]) * 2 * np.pi / 5)
    assert tok.binner.codes("phi", phi).tolist() == [0, 1, 2, 2]


def test_fit_on_background_uses_only_background_events():
    tok = build_tokenizer(preset("binned_ambre5_bkg"), ("pT", "eta", "phi"), use_met=True)
    train = _train_table()  # background events 0, 1, 4: pT 10, 20, 30, 40, 90, 100; MET 100, 200, 500
    tok.fit(train)
    assert tok.binner.edges["pT"] == pytest.approx(np.quantile([10, 20, 30, 40, 90, 100], [0.2, 0.4, 0.6, 0.8]))
    assert tok.binner.edges["MET"] == pytest.approx(np.quantile([100, 200, 500], [0.2, 0.4, 0.6, 0.8]))
    signal_only = make_events(train.ids, train.cont, train.globals_, label=[1] * 5)
    with pytest.raises(TokenizerError, match="fit_on=background: the training split has no such events"):
        tok.fit(signal_only)


def test_per_object_type_edges_and_the_pooled_fallback():
    cfg = BinnedTokenizerConfig(kind="binned", name="t", n_bins=2, per_object_type=True)
    # jets (1): pT 10, 20, 30, 40 -> edge 25; b-jets (2): 100, 200, 300 -> edge 200; one photon (7) only
    ids = [[1, 1, 2], [1, 1, 2], [2, 7, 0]]
    pt = [[10, 20, 100], [30, 40, 200], [300, 55, 0]]
    cont = np.stack([pt, np.zeros((3, 3)), np.zeros((3, 3))], axis=-1)
    tok = build_tokenizer(cfg, ("pT", "eta", "phi"), use_met=False)
    tok.fit(make_events(ids, cont))
    edges = tok.binner.edges["pT"]
    assert edges["1"] == [25.0] and edges["2"] == [200.0] and "7" not in edges  # 1 photon < 2 bins: pooled
    assert edges["all"] == [float(np.float32(np.median([10, 20, 100, 30, 40, 200, 300, 55])))]
    codes = tok.binner.codes("pT", np.float32([[26, 150, 60]]), ids=np.array([[1, 2, 7]]))
    assert codes.tolist() == [[1, 0, 1]]  # jet above 25; b-jet below 200; photon above the pooled 47.5


def test_bad_inputs_are_named():
    tok = build_tokenizer(AMBRE, ("pT", "eta", "phi"), use_met=False)
    with pytest.raises(TokenizerError, match=r"object-type ids outside 0..7: \[9\]"):
        tok.fit(make_events([[9]], [[[10, 0, 0]]]))
    with pytest.raises(TokenizerError, match="feature pT: 1 NaN/inf values cannot be binned"):
        tok.fit(make_events([[1, 1]], [[[10, 0, 0], [np.nan, 0, 0]]]))
    with pytest.raises(TokenizerError, match="transform before fit"):
        tok.transform(make_events([[1]], [[[10, 0, 0]]]))
    with pytest.raises(TokenizerError, match=r"events carry features \('E', 'pT'"):
        tok.fit(_train_table(4))
    tok.fit(make_events([[1, 1, 1, 1, 1, 0]], [[[v, 0, 0] for v in (10, 20, 30, 40, 50)] + [[np.nan, 0, 0]]]))
    assert tok.binner.edges["pT"] == pytest.approx([18, 26, 34, 42])  # NaN in an empty slot is never read
    with pytest.raises(TokenizerError, match="feature eta: 1 NaN/inf"):
        tok.transform(make_events([[1]], [[[10, np.inf, 0]]]))
    bad = BinnedTokenizerConfig(kind="binned", name="b", rules={"pT": "quantile", "eta": "quantile"})
    with pytest.raises(TokenizerError, match=r"no binning rule for features \['phi'\]"):
        build_tokenizer(bad, ("pT", "eta", "phi"), use_met=False)
    inert = BinnedTokenizerConfig(kind="binned", name="b", rules={"phi": "cyclic"}, per_object_type=True)
    with pytest.raises(TokenizerError, match="per_object_type has no effect"):
        build_tokenizer(inert, ("phi",), use_met=False)


def test_values_outside_the_fitted_range_go_to_edge_bins_and_are_counted():
    tok = build_tokenizer(AMBRE, ("pT", "eta", "phi"), use_met=True)
    tok.fit(_train_table())  # pT seen in [10, 100], eta in [-0.8, 1.0], MET in [100, 500]
    out = tok.transform(make_events([[1, 1, 1]], [[[5, 0, 0], [1e4, 3, 0], [50, 0, 0]]], [[50, 0.0]]))
    assert out["tokens"][0, 2:].tolist() == [1 + 10 + 2, 1 + 100 + 20 + 2, 1 + 50 + 10 + 2]
    assert tok.out_of_range == {"pT": 2, "eta": 1, "MET": 1}


def test_phi_width_of_pi_over_5_is_rejected_with_the_fix(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "kind: binned\nrules: {phi: {kind: cyclic, range: [-3.141592653589793, 3.141592653589793], width: 0.6283}}\n"
    )
    with pytest.raises(Exception, match=r"rules.phi: 5 bins of width 0.6283 cover 3.1415, .* use width 1.2566"):
        preset("bad", tmp_path)
    (tmp_path / "unknown.yaml").write_text("kind: binned\nrules: {pT: quantile, energy: quantile}\n")
    with pytest.raises(Exception, match="rules.energy"):
        preset("unknown", tmp_path)


def test_preset_errors_name_the_preset_file_and_key(tmp_path):
    from conftest import write_experiment

    from expmatrix.matrix import build_matrix

    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "p.yaml").write_text("kind: integer\nrules: {pT: {kind: round, codes: 0}}\n")
    exp = write_experiment(tmp_path, presets=str(presets), factors={"tokenizer": ["p"]})
    with pytest.raises(SpecError, match=r"p.yaml: rules.pT.codes: Input should be greater than or equal to 1"):
        build_matrix(exp)


@pytest.mark.parametrize("n", [7, 5000, 4 * SAMPLE + 3])
def test_exact_quantiles_equal_numpy_bit_for_bit(n):
    rng = np.random.default_rng(n)
    v = rng.exponential(50, n).astype(np.float32)
    v[: n // 3] = v[0]  # a third of ties
    qs = np.array([0.1, 0.2, 0.5, 0.51, 0.8])
    assert exact_quantiles(v, qs).tolist() == np.quantile(v.astype(np.float64), qs).tolist()
    chunks = lambda: np.array_split(v, 7)  # noqa: E731 - streamed in chunks: the same numbers
    assert exact_quantiles_stream(qs, chunks, n)[0].tolist() == np.quantile(v.astype(np.float64), qs).tolist()


def test_a_bracket_that_misses_is_widened_not_trusted():
    v = np.arange(100_000, dtype=np.float32)
    sketch = QuantileSketch(np.array([0.5]), expected=len(v))
    sketch.add_sample(v[90_000:])  # a sample from the top only: its bracket cannot hold the median
    sketch.n = len(v)
    misses = 0
    while True:
        sketch.start_counting()
        sketch.add_count(v)
        result = sketch.result()
        if result is not None:
            break
        misses += 1
    assert misses >= 1 and result.tolist() == [49999.5]


def test_chunks_on_several_threads_give_the_single_thread_tokens_and_counts():
    import torch

    from expmatrix.tokenizers.binned import CHUNK_EVENTS

    rng = np.random.default_rng(3)
    n = 3 * CHUNK_EVENTS + 17  # four chunks, the last one short
    ids = rng.integers(0, 8, (n, 6))
    cont = np.stack([rng.exponential(50, (n, 6)), rng.normal(0, 1.5, (n, 6)), rng.uniform(-4, 4, (n, 6))], -1)
    cont[ids == 0] = np.nan  # empty slots hold NaN: never read
    events = make_events(ids, cont, np.stack([rng.exponential(80, n), rng.uniform(-3, 3, n)], 1))
    tok = build_tokenizer(AMBRE, ("pT", "eta", "phi"), use_met=True)
    tok.fit(make_events(ids[: n // 2], np.nan_to_num(cont[: n // 2] / 2), events.globals_[: n // 2] / 2))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append((tok.transform(events)["tokens"], dict(tok.out_of_range)))
    finally:
        torch.set_num_threads(before)
    (one, counts1), (two, counts2) = results
    assert torch.equal(one, two) and counts1 == counts2
    real = ids > 0
    train_pt = cont[: n // 2, :, 0][real[: n // 2]] / 2
    outside = real & ((cont[..., 0] < train_pt.min()) | (cont[..., 0] > train_pt.max()))
    assert counts1["pT"] == outside.sum() > 100  # fitted on halved values: many real pT lie above the range
    assert (one[:, 2:][torch.from_numpy(~real)] == 0).all()


def test_exact_quantiles_with_more_than_255_bracket_boundaries():
    v = np.random.default_rng(5).normal(size=1_000_000).astype(np.float32)
    qs = np.arange(1, 140) / 140  # 139 brackets, 278 boundaries: codes beyond uint8
    chunks = lambda: [v]  # noqa: E731
    assert exact_quantiles_stream(qs, chunks, expected=1)[0].tolist() == np.quantile(v.astype(np.float64), qs).tolist()
