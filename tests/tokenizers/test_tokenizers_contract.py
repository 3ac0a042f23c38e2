"""The contract every tokenizer preset passes: fit -> transform -> embed -> save -> load, padding, no leakage."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from conftest import PRESETS, make_events, write_experiment

from expmatrix.config import DataConfig, JobConfig, Presets
from expmatrix.data import load_splits, synthetic_path
from expmatrix.data.events import Events
from expmatrix.data.synthetic import write_fourtops
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore
from expmatrix.tokenizers import build_tokenizer
from expmatrix.training.job import train_job

NAMES = Presets(PRESETS).available()
VECTORS = {"4": ("pT", "eta", "phi"), "5": ("E", "pT", "eta", "phi")}


FAST = {"vqvae": {"epochs": 3}}  # the contract does not depend on how long a codebook trains: keep the suite quick


def preset(name: str):
    raw = Presets(PRESETS).get(name, "test")
    return JobConfig.model_validate({"data": {}, "tokenizer": {**raw, **FAST.get(raw["kind"], {})}}).tokenizer


# every preset; those whose fit trains (a codebook, k-means centres) take seconds: `slow`
SUITE = [pytest.param(n, marks=pytest.mark.slow) if preset(n).kind in ("vqvae", "kmeans") else n for n in NAMES]


def select(events: Events, names: tuple[str, ...], use_met: bool) -> Events:
    cols = [events.feature_names.index(f) for f in names]
    g = events.globals_ if use_met else None
    return make_events(events.ids, events.cont[:, :, cols], g, events.label, names)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cfg = DataConfig(cont_features=[0, 1, 2, 3], synthetic={"events": 6000, "seed": 4})
    return load_splits(cfg, "synthetic", tmp_path_factory.mktemp("cache"))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("vect", ["4", "5"])
@pytest.mark.parametrize("use_met", [True, False], ids=["met", "nomet"])
@pytest.mark.parametrize("name", SUITE)
def test_fit_transform_embed_and_state_round_trip(name, use_met, vect, splits):
    train, test = (select(splits[s], VECTORS[vect], use_met) for s in ("train", "test"))
    tok = build_tokenizer(preset(name), VECTORS[vect], use_met)
    tok.fit(train)
    state = json.loads(json.dumps(tok.state_dict()))  # JSON-able, as saved beside the run
    loaded = build_tokenizer(preset(name), VECTORS[vect], use_met)
    loaded.load_state_dict(state)
    out = tok.transform(test)
    assert _equal(out, loaded.transform(test))
    assert loaded.state_dict() == tok.state_dict()

    n_globals = 0 if not use_met else 1 if preset(name).kind == "direct" else 2  # one token, or one per global
    n_tokens = test.ids.shape[1] + n_globals
    assert out["mask"].shape == (len(test), n_tokens)
    assert torch.equal(out["mask"][:, -test.ids.shape[1] :], torch.from_numpy(test.real))
    h, mask = tok.embedding(16)(out)
    assert h.shape == (len(test), n_tokens, 16) and torch.equal(mask, out["mask"])
    for k, v in out.items():  # every tensor has the events on dim 0 (the trainer slices batches)
        assert len(v) == len(test), k


@pytest.mark.parametrize("name", SUITE)
def test_padded_slots_are_never_fitted_and_encode_as_padding(name, splits):
    train = splits["train"]
    tok = build_tokenizer(preset(name), train.feature_names, True)
    tok.fit(train)
    junk = np.where(train.real[..., None], train.cont, np.float32(7e5))
    other = build_tokenizer(preset(name), train.feature_names, True)
    other.fit(make_events(train.ids, junk, train.globals_, train.label, train.feature_names))
    assert other.state_dict() == tok.state_dict()
    out = tok.transform(make_events(train.ids, junk, train.globals_, train.label, train.feature_names))
    assert _equal(out, tok.transform(train))  # junk in empty slots changes no token
    slots, empty = train.ids.shape[1], ~torch.from_numpy(train.real)
    per_object = {k: v[:, -slots:] for k, v in out.items() if v.dim() > 1 and v.shape[1] >= slots}  # objects last
    assert len(per_object) > 1, out.keys()  # the mask and what the input layer reads
    for key, v in per_object.items():  # an empty slot is padding (0, False) in every tensor of every tokenizer
        assert (v[empty] == 0).all(), key


@pytest.mark.slow
def test_changing_val_and_test_data_does_not_change_the_fitted_state(tmp_path):
    """Through the real job path: two data files that differ only in val/test give the same tokenizer.json."""
    exp = write_experiment(
        tmp_path,
        data={"path": "synthetic", "synthetic": {"events": 1500, "seed": 5}},
        # every fit code path: transforms, quantile edges, integer codes, k-means, PCA, VQ-VAE pretraining
        factors={"tokenizer": ["direct", "binned_ambre5_bkg", "integer_fourtops", "kmeans512", "fsq512", "vqvae512"]},
        base={"model": {"target_params": 20000, "layers": 1, "heads": 4}, "train": {"epochs": 1}},
    )
    jobs = build_matrix(exp).jobs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    stores = [RunStore(tmp_path / name, "tiny") for name in ("a", "b")]
    cfg = jobs[0].config.data
    path_a, path_b = (synthetic_path(s.paths.cache.dir, cfg) for s in stores)
    write_fourtops(path_a, 1500, 5)
    path_b.parent.mkdir(parents=True)
    path_b.write_bytes(path_a.read_bytes())
    with h5py.File(path_b, "r+") as f:
        for key in ("X_val", "X_test"):
            x = f[key][:]
            x[:, 20:] *= 3.0  # every E, pT, eta, phi
            x[:, 18] *= 5.0  # MET
            f[key][...] = x
    try:
        for job in jobs:
            states = []
            for store in stores:
                metrics = train_job(job, store)
                states.append(store.job(job.id).tokenizer.read_text())
            assert states[0] == states[1], job.levels
    finally:
        torch.set_num_threads(threads)
    assert metrics["events"] == {"train": 1200, "val": 150, "test": 150}
