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
from expmatrix.tokenizers.base import Tokenizer
from expmatrix.training.job import train_job

NAMES = Presets(PRESETS).available()
VECTORS = {"4": ("pT", "eta", "phi"), "5": ("E", "pT", "eta", "phi")}


# The contract does not depend on how long a codebook trains: keep the suite quick. On FIT_EVENTS events, 2 epochs
# of small batches (more steps, more dead-code replacement) still pass the preset's own min_utilisation floor of
# 50% with a wide margin (held-out utilisation about 85-90%; the fit fails below the floor). k-means runs on a
# seeded sample of 4000 real objects (its max_fit_objects path: still real objects only, 8 per centre).
FAST = {"vqvae": {"epochs": 2, "batch_size": 64}, "kmeans": {"max_fit_objects": 4000}}
COSTLY = ("vqvae", "kmeans")  # kinds whose fit trains (a codebook, k-means centres): seconds, not milliseconds
FIT_EVENTS = 2000  # the training events these fit on: enough objects for 512 codes, a third of the split's cost
pytestmark = pytest.mark.usefixtures("one_thread")


def preset(name: str):
    raw = Presets(PRESETS).get(name, "test")
    return JobConfig.model_validate({"data": {}, "tokenizer": {**raw, **FAST.get(raw["kind"], {})}}).tokenizer


def fit_key(name: str) -> str:
    """What a preset's fit reads: its config less its label and how its input layer starts. Presets with the
    same key fit byte-identical states (vqvae512 and vqvae512_fresh differ only in embedding_init), so their
    fit is made and checked once and the other preset loads it (its input layer is still checked on its own)."""
    return json.dumps(preset(name).model_dump(mode="json", exclude={"name", "embedding_init"}), sort_keys=True)


def _param(name: str):
    """A costly fit is `slow`; its tests stay on one xdist worker (the module is spread), so each fit is made once."""
    if preset(name).kind not in COSTLY:
        return name
    return pytest.param(name, marks=[pytest.mark.slow, pytest.mark.xdist_group(f"contract-{preset(name).kind}")])


# every preset
SUITE = [_param(n) for n in NAMES]


def select(events: Events, names: tuple[str, ...], use_met: bool) -> Events:
    cols = [events.feature_names.index(f) for f in names]
    g = events.globals_ if use_met else None
    return make_events(events.ids, events.cont[:, :, cols], g, events.label, names)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cfg = DataConfig(cont_features=[0, 1, 2, 3], synthetic={"events": 6000, "seed": 4})
    return load_splits(cfg, "synthetic", tmp_path_factory.mktemp("cache"))


def training(name: str, splits) -> Events:
    """The training split a preset is fitted on: its first FIT_EVENTS events for a costly fit."""
    train = splits["train"]
    return train.rows(slice(0, FIT_EVENTS)) if preset(name).kind in COSTLY else train


_FITS: dict[tuple, Tokenizer] = {}  # (fit key, features, MET, data) -> a tokenizer fitted on them, never changed


def fitted(name: str, features: tuple[str, ...], use_met: bool, events: Events, data: str) -> Tokenizer:
    """A tokenizer of preset `name` fitted on `events` (named `data`): each fit is made once per worker; a
    preset that shares another's fit key gets that fit's state loaded."""
    key = (fit_key(name), features, use_met, data)
    if key not in _FITS:
        tok = build_tokenizer(preset(name), features, use_met)
        tok.fit(events)
        _FITS[key] = tok
    tok = _FITS[key]
    if tok.config.name != name:
        tok = build_tokenizer(preset(name), features, use_met)
        tok.load_state_dict(json.loads(json.dumps(_FITS[key].state_dict())))
    return tok


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("vect", ["4", "5"])
@pytest.mark.parametrize("use_met", [True, False], ids=["met", "nomet"])
@pytest.mark.parametrize("name", SUITE)
def test_fit_transform_embed_and_state_round_trip(name, use_met, vect, splits):
    train, test = (select(s, VECTORS[vect], use_met) for s in (training(name, splits), splits["test"]))
    tok = fitted(name, VECTORS[vect], use_met, train, "train")
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
    train = training(name, splits)
    assert train.feature_names == VECTORS["5"]  # the fit of the round trip's 5-vector with MET: made once
    tok = fitted(name, train.feature_names, True, train, "train")
    junk = np.where(train.real[..., None], train.cont, np.float32(7e5))
    junk_events = make_events(train.ids, junk, train.globals_, train.label, train.feature_names)
    other = fitted(name, train.feature_names, True, junk_events, "train with junk in the empty slots")
    assert other.state_dict() == tok.state_dict()
    out = tok.transform(junk_events)
    assert _equal(out, tok.transform(train))  # junk in empty slots changes no token
    slots, empty = train.ids.shape[1], ~torch.from_numpy(train.real)
    per_object = {k: v[:, -slots:] for k, v in out.items() if v.dim() > 1 and v.shape[1] >= slots}  # objects last
    assert len(per_object) > 1, out.keys()  # the mask and what the input layer reads
    for key, v in per_object.items():  # an empty slot is padding (0, False) in every tensor of every tokenizer
        assert (v[empty] == 0).all(), key


def _fast(name: str) -> dict:
    """FAST's settings of a preset as overrides of an experiment's level."""
    return {f"tokenizer.{k}": v for k, v in FAST.get(preset(name).kind, {}).items()}


@pytest.mark.slow
def test_changing_val_and_test_data_does_not_change_the_fitted_state(tmp_path):
    """Through the real job path: two data files that differ only in val/test give the same tokenizer.json."""
    exp = write_experiment(
        tmp_path,
        data={"path": "synthetic", "synthetic": {"events": 1500, "seed": 5}},
        # every fit code path: transforms, quantile edges, integer codes, k-means, PCA, VQ-VAE pretraining; with
        # FAST's settings (which data a fit sees does not depend on how long it trains)
        factors={
            "tokenizer": {
                t: {"tokenizer": t, **_fast(t)}
                for t in ("direct", "binned_ambre5_bkg", "integer_fourtops", "kmeans512", "fsq512", "vqvae512")
            }
        },
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
