"""The code tokenizers (`kmeans`, `fsq`, `vqvae`): exact codes on hand-made tables, their guards, and the
VQ-VAE's pretraining: codebook health, a collapse that fails the fit, an artifact shared across experiments."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import PRESETS, make_events, write_experiment

from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import Recipe
from expmatrix.config import JobConfig, Presets, SpecError, load_preset
from expmatrix.matrix import build_matrix
from expmatrix.shared_stages import pending_stages
from expmatrix.store import RunStore
from expmatrix.tokenizers import TokenizerError, build_tokenizer
from expmatrix.tokenizers.vqvae.health import plot_health

FEATURES = ("pT", "eta", "phi")
RAW = {f: {"op": "identity", "fit": "none"} for f in FEATURES}  # codes of the raw values: computable by hand


def tokenizer(kind: str, use_met: bool = False, **settings):
    raw = {"name": f"test_{kind}", "kind": kind, **settings}
    return build_tokenizer(JobConfig.model_validate({"data": {}, "tokenizer": raw}).tokenizer, FEATURES, use_met)


def table(objects: np.ndarray, per_event: int, types: int = 1, met=None):
    """Events of `per_event` objects each (then two empty slots), in the order given."""
    n = len(objects) // per_event
    cont = np.zeros((n, per_event + 2, 3), np.float32)
    cont[:, :per_event] = objects.reshape(n, per_event, 3)
    ids = np.zeros((n, per_event + 2), np.int64)
    ids[:, :per_event] = types
    return make_events(ids, cont, met)


def test_fsq_codes_of_a_hand_made_table():
    """Corners (50 +- 3, +-2, +-1): the principal axes are pT, eta, phi (variances 9, 4, 1 before whitening);
    a whitened corner is +-0.935 on each axis, FSQ rounds tanh(0.935) = 0.73 to +-1 (digit 2 or 0) with
    3 levels; the code is digit_pT + 3 digit_eta + 9 digit_phi. The centre is digit 1 everywhere: 13."""
    signs = np.array([(a, b, c) for a in (1, -1) for b in (1, -1) for c in (1, -1)], np.float32)
    corners = np.array([50, 0, 0], np.float32) + signs * [3, 2, 1]
    tok = tokenizer("fsq", transforms=RAW, levels=[3, 3, 3])
    tok.fit(table(corners, 1))
    digits = (signs + 1).astype(int)
    expected = digits @ [1, 3, 9]
    probe = table(np.vstack([corners, [[50, 0, 0]]]), 1, types=3)
    codes = tok.transform(probe)["codes"]
    assert codes[:, 0, 0].tolist() == (expected + 1).tolist() + [13 + 1]  # + 1: 0 is padding
    assert codes[:, 0, 1].tolist() == [3] * 9  # the object type, for its own embedding
    assert (codes[:, 1:] == 0).all()  # empty slots are padding in every part
    assert tok.n_codes == 27


def test_kmeans_codes_of_a_hand_made_table_are_the_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[20, -1.5, -2.0], [80, 0.0, 0.5], [300, 1.5, 2.5]], np.float32)
    which = np.tile([0, 1, 2, 2, 1, 0], 50)
    objects = centres[which] + rng.normal(0, 0.01, (len(which), 3)).astype(np.float32)
    tok = tokenizer("kmeans", transforms=RAW, codes=3)
    tok.fit(table(objects, 6))
    codes = tok.transform(table(objects, 6))["codes"][:, :6, 0].reshape(-1).numpy() - 1
    mapping = {int(w): {int(c) for c in codes[which == w]} for w in range(3)}
    assert all(len(c) == 1 for c in mapping.values())  # each cluster one code
    assert sorted(c for s in mapping.values() for c in s) == [0, 1, 2]  # three clusters, three codes
    np.testing.assert_allclose(np.sort(tok.centres, axis=0), np.sort(centres, axis=0), atol=0.01)


def test_met_tokens_are_bins_as_in_the_joint_binning():
    objects = np.tile([[50, 0, 0], [60, 1, 1]], (50, 1)).astype(np.float32)
    met = np.column_stack([np.arange(1, 101), np.linspace(-3.1, 3.1, 100)]).astype(np.float32)
    tok = tokenizer("kmeans", use_met=True, transforms=RAW, codes=2, met_bins=5)
    tok.fit(table(objects, 1, met=met))
    out = tok.transform(table(objects, 1, met=met))
    assert out["g"][:, 0].tolist() == [b for b in range(1, 6) for _ in range(20)]  # quintiles of MET
    width = 2 * np.pi / 5  # MET-phi: five equal widths over [-pi, pi)
    assert out["g"][:, 1].tolist() == (np.floor((met[:, 1] + np.pi) / width) + 1).astype(int).tolist()
    assert out["mask"].shape == (100, 2 + 3) and out["mask"][:, :2].all()


def test_bad_code_settings_are_errors_before_anything_trains(tmp_path):
    with pytest.raises(TokenizerError, match=r"3 FSQ levels \[8, 8, 8\] but only 2 features"):
        build_tokenizer(load_preset("fsq512", PRESETS), ("pT", "eta"), False)
    bad = tmp_path / "fsq_bad.yaml"
    bad.write_text("kind: fsq\nlevels: [8, 2]\n")
    with pytest.raises(SpecError, match=r"fsq_bad.yaml: levels: .*integers >= 3, got \[8, 2\]"):
        load_preset(str(bad))
    few = table(np.tile([[50, 0, 0]], (40, 1)).astype(np.float32), 4)  # 40 objects
    with pytest.raises(TokenizerError, match="512 codes but only 40 real training objects"):
        tokenizer("kmeans").fit(few)
    with pytest.raises(TokenizerError, match="a codebook of 512 codes but only 36 real training objects"):
        tokenizer("vqvae").fit(few)  # 36: a tenth of the events is held out to measure the codebook's health


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
    from expmatrix.config import DataConfig
    from expmatrix.data import load_splits

    cfg = DataConfig(cont_features=[1, 2, 3], synthetic={"events": 6000, "seed": 4})
    return load_splits(cfg, "synthetic", tmp_path_factory.mktemp("cache"))["train"]


@pytest.mark.slow
def test_vqvae_health_record_and_plots(train_split, tmp_path, one_thread):
    tok = tokenizer("vqvae", epochs=3, codebook_size=64)
    tok.fit(train_split)
    record = tok.record
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    last = record["history"][-1]
    assert record["holdout_events"] == 480 and record["holdout_objects"] > 64
    used = 64 - last["dead_codes"]
    assert last["utilisation"] == used / 64 >= 0.5 and 1 <= last["perplexity"] <= used
    assert last["commitment"] >= 0 and set(last["errors"]) == set(FEATURES)
    pt = last["errors"]["pT"]  # in GeV, after the inverse transform: far below the pT spread of the objects
    spread = float(train_split.cont[:, :, 0][train_split.real].std())
    assert 0 < pt["mae"] < pt["rmse"] < spread and 0 < pt["median_rel"] < 1
    assert set(record["histograms"]["eta"]) == {"edges", "original", "reconstructed"}
    assert sum(record["histograms"]["eta"]["original"]) <= record["holdout_objects"]
    assert [p.name for p in plot_health(record, tmp_path)] == ["reconstruction.png", "codebook.png"]
    state = json.loads(json.dumps(tok.state_dict()))
    again = tokenizer("vqvae", epochs=3, codebook_size=64)
    again.load_state_dict(state)
    assert torch.equal(again.transform(train_split)["codes"], tok.transform(train_split)["codes"])  # exact reload
    # what a job reports beside its metrics (metrics.json `codebook`, the report's codebook.* columns)
    rmse = {f"{f}_rmse": e["rmse"] for f, e in last["errors"].items()}
    assert again.summary() == {k: last[k] for k in ("utilisation", "perplexity", "dead_codes")} | rmse
    assert set(rmse) == {"pT_rmse", "eta_rmse", "phi_rmse"}
    assert tokenizer("kmeans", codes=8).summary() == {}  # a tokenizer without a codebook to report


@pytest.mark.slow
def test_a_collapsed_codebook_fails_the_fit_with_its_numbers(train_split, one_thread):
    collapsing = {"kmeans_init": False, "dead_code_threshold": 0, "epochs": 1, "min_utilisation": 0.9}
    with pytest.raises(TokenizerError, match=r"codebook collapsed: held-out utilisation .* is below .* 90%"):
        tokenizer("vqvae", **collapsing).fit(train_split)


def test_codebook_embedding_starts_at_the_code_vectors(train_split, one_thread):
    tok = tokenizer("vqvae", epochs=1, codebook_size=16, embedding_init="codebook", min_utilisation=0.0)
    tok.fit(train_split)
    table = tok.embedding(8).parts[0]
    torch.testing.assert_close(table[0].weight[1:], tok.model.vq.codebook.reshape(16, -1))
    assert table[0].weight.requires_grad and table[1].weight.shape == (8, tok.settings.code_dim)


@pytest.mark.slow
def test_a_second_experiment_reuses_the_pretrained_codebook(tmp_path, one_thread):
    """One artifact per preset, feature and data selection, in runs/_cache: shared across experiments."""
    small = {"data": {"path": "synthetic", "synthetic": {"events": 2000, "seed": 1}}, "factors": {}}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first = build_matrix(write_experiment(tmp_path / "a", **small, base={"tokenizer": "vqvae512"}))
    store = RunStore(tmp_path / "runs", first.spec.name)
    stages = pending_stages(first.jobs, store)
    assert len(stages) == 1
    fitted = Assembly(first.jobs[0], store).tokenizer
    other = write_experiment(tmp_path / "b", **small, name="other", base={"tokenizer": "vqvae512"})
    second = build_matrix(other, overrides={"model.pooling": "max"})  # another experiment and model
    assert pending_stages(second.jobs, RunStore(tmp_path / "runs", "other")) == []  # nothing to pretrain
    reused = Assembly(second.jobs[0], store).tokenizer
    assert reused.state_dict() == fitted.state_dict()


def test_every_code_preset_is_in_the_suite_and_the_flagship():
    suite = build_matrix(PRESETS.parent / "experiments" / "tokenizer_suite.yaml", "quick")
    names = {j.levels["tokenizer"] for j in suite.jobs}
    assert {"vqvae512", "kmeans512", "fsq512"} <= names
    flagship = build_matrix(PRESETS.parent / "experiments" / "binning_vs_direct.yaml", "quick")
    assert sorted({j.levels["tokenizer"] for j in flagship.jobs}) == ["binned_ambre5", "direct", "vqvae512"]
    assert len(flagship.cells) == 36 and len(flagship.jobs) == 72
    assert {"vqvae512", "kmeans512", "fsq512"} <= set(Presets(PRESETS).available())


@pytest.mark.slow
def test_an_artifact_of_another_data_selection_is_refused_naming_both(tmp_path, one_thread):
    exp = write_experiment(tmp_path, factors={}, base={"tokenizer": "kmeans512"},
                           data={"path": "synthetic", "synthetic": {"events": 2000, "seed": 1}})  # fmt: skip
    job = build_matrix(exp).jobs[0]
    store = RunStore(tmp_path / "runs", "tiny")
    _ = Assembly(job, store).tokenizer
    path = store.paths.cache.fit(Recipe.of(job).fit_key).artifact
    record = json.loads(path.read_text())
    record["data"]["max_events"] = 500  # as if fitted on another selection, under this key
    path.write_text(json.dumps(record))
    with pytest.raises(TokenizerError, match=r"fitted for data .*'max_events': 500.* but this job needs .*None"):
        _ = Assembly(job, store).tokenizer


@pytest.mark.slow
def test_a_failed_fit_is_recorded_once_for_every_job_that_needs_it(tmp_path, one_thread):
    """The second job does not repeat a failed pretraining; --retry-failed (clear_failed_stages) fits again."""
    from expmatrix.assembly.fits import FitFailed
    from expmatrix.shared_stages import clear_failed_stages, shared_stages

    exp = write_experiment(tmp_path, factors={}, seeds=[0, 1], data={"path": "synthetic", "synthetic": {"events": 300}},
                           base={"tokenizer": "vqvae512"})  # fmt: skip  # 240 training events: too few objects
    jobs = build_matrix(exp).jobs
    store = RunStore(tmp_path / "runs", "tiny")
    with pytest.raises(TokenizerError, match="tokenizer .vqvae512.: "):  # too few objects, or a collapse
        _ = Assembly(jobs[0], store).tokenizer
    assert [s.state for s in shared_stages(jobs, store)] == ["failed"] and pending_stages(jobs, store) == []
    with pytest.raises(FitFailed, match=r"the shared tokenizer fit \w+ failed \(TokenizerError: tokenizer 'vqvae512'"):
        _ = Assembly(jobs[1], store).tokenizer
    clear_failed_stages(jobs, store)
    assert [s.state for s in pending_stages(jobs, store)] == ["pending"]


def test_object_order_is_a_factor_like_any_other():
    spec = PRESETS.parent / "experiments" / "binning_vs_direct.yaml"
    matrix = build_matrix(spec, "quick")
    assert all("order" not in j.config.model_dump()["data"] for j in matrix.jobs)  # at its default: out of the job ids
    from expmatrix.config import load_experiment

    assert load_experiment(spec).name == "binning_vs_direct"
    by_order = build_matrix(spec, "quick", {"data.order": "pt"})
    assert {j.config.data.order for j in by_order.jobs} == {"pt"}
    assert not {j.id for j in by_order.jobs} & {j.id for j in matrix.jobs}


def test_the_normformer_encoder_codes_each_object_from_its_event_and_ignores_empty_slots(train_split, one_thread):
    """A code may depend on the other objects of its event, never on padding: appending empty slots (with
    junk in them) changes no code, and the codes of the real objects are those of the frozen lookup."""
    settings = {"encoder": "normformer", "hidden": 32, "layers": 1, "epochs": 2, "codebook_size": 32}
    tok = tokenizer("vqvae", **settings)
    events = train_split.rows(slice(0, 500))
    tok.fit(events)
    pad = 3
    ids = np.pad(events.ids, ((0, 0), (0, pad)))
    cont = np.pad(events.cont, ((0, 0), (0, pad), (0, 0)), constant_values=9e3)
    padded = make_events(ids, cont, None, events.label, FEATURES)
    a = tok.transform(events)["codes"][..., 0]
    b = tok.transform(padded)["codes"][..., 0]
    assert torch.equal(b[:, : a.shape[1]], a) and (b[:, a.shape[1] :] == 0).all()
    x = torch.from_numpy(tok.normalized(events))
    z = tok.model.encode(x, torch.from_numpy(events.ids), torch.from_numpy(events.real))
    with torch.no_grad():
        assert torch.equal(tok.model.quantize(z)[1], tok.model.lookup(z)[1])  # the frozen lookup: the same choice
