"""The Pythia generator: real Pythia 8 and FastJet events through the detector emulation, checked against physics
(W and top peaks, MET against the neutrinos, lepton charges) and against the 4tops layout the reader reads."""

from __future__ import annotations

from itertools import combinations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from expmatrix.cli import main
from expmatrix.config import DataConfig
from expmatrix.config.layout import N_OBJECTS
from expmatrix.data import data_selection, synthetic_path
from expmatrix.data.fourtops import DataError, read_split
from expmatrix.data.pythia import Detector, chunks, load_detector, write_pythia
from expmatrix.data.pythia.chunks import Chunk, make_chunk, parts_folder, plan, settings_of
from expmatrix.data.pythia.processes import counts, select

pytest.importorskip("pythia8mc", reason="the physics extra: pip install 'expmatrix[physics]'")
W_MASS, TOP_MASS = 80.4, 172.5


@pytest.fixture(scope="module")
def ttbar() -> dict[str, np.ndarray]:
    """200 tt̄ events after the emulation (about 1000 tried: seconds of Pythia). With 150 events of each of the
    seeds 1-6 every check below held: about 700 dijet masses, 170 top candidates, MET correlation 0.89-0.97,
    42-50 leptons; the peaks in the W and top bins."""
    return make_chunk(Chunk("tt", 0, 200), seed=1, det=Detector())


def four_vectors(x: np.ndarray, keep) -> list[list[np.ndarray]]:
    """Per event, (E, px, py, pz) of the objects whose id passes `keep`."""
    ids, cont = x[:, :N_OBJECTS], x[:, N_OBJECTS + 2 :].reshape(len(x), N_OBJECTS, 4)
    e, pt, eta, phi = np.moveaxis(cont, 2, 0)
    p = np.stack([e, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=2)
    return [list(p[i][keep(ids[i])]) for i in range(len(x))]


def mass(*vectors: np.ndarray) -> float:
    s = np.sum(vectors, axis=0)
    return float(np.sqrt(max(s[0] ** 2 - s[1:] @ s[1:], 0.0)))


def peak(values: list[float], lo: float, hi: float, width: float) -> float:
    """The centre of the fullest bin."""
    counts_, edges = np.histogram(values, bins=np.arange(lo, hi + width, width))
    return float(edges[np.argmax(counts_)] + width / 2)


def test_processes_share_the_events_and_unknown_names_are_refused():
    assert counts(select(None), 1001) == {"4t": 501, "ttH": 200, "ttZ": 150, "tt": 150}
    assert counts(select(["4t", "tt"]), 130) == {"4t": 100, "tt": 30}
    with pytest.raises(ValueError, match="unknown process 'ttW'; valid: 4t, ttH, ttZ, tt"):
        select(["4t", "ttW"])
    chunks = plan(["4t", "tt"], 130, 40)
    assert [(c.process, c.index, c.events) for c in chunks][:4] == [("4t", 0, 40), ("tt", 0, 30), ("4t", 1, 40),
                                                                    ("4t", 2, 20)]  # fmt: skip


def test_detector_file_overrides_and_unknown_keys_are_named(tmp_path):
    good, bad = tmp_path / "det.yaml", tmp_path / "bad.yaml"
    good.write_text("jet_pt_min: 30\nbtag_eff: 0.7\n")
    bad.write_text("jet_pt: 30\n")
    assert load_detector(good) == Detector(jet_pt_min=30.0, btag_eff=0.7)
    with pytest.raises(DataError, match="bad.yaml: unknown detector key jet_pt; valid: jet_r, jet_pt_min"):
        load_detector(bad)


def test_bad_input_is_one_clear_line(tmp_path, monkeypatch):
    run = lambda *args: CliRunner().invoke(main, ["data", "generate", "fourtops", *args])  # noqa: E731
    out = str(tmp_path / "x.h5")
    cases = {
        ("--out", out, "--events", "0"): "the number of events must be positive, got 0",
        ("--out", str(tmp_path / "no" / "x.h5"), "--events", "10"): f"the folder {tmp_path / 'no'} does not exist",
        ("--out", out, "--processes", "4t,ttWW"): "unknown process 'ttWW'; valid: 4t, ttH, ttZ, tt",
    }
    for args, message in cases.items():
        result = run(*args)
        assert result.exit_code == 1 and message in result.output, result.output
    monkeypatch.setitem(__import__("sys").modules, "fastjet", None)  # as if the extra were not installed
    result = run("--out", out, "--events", "10")
    assert result.exit_code == 1 and "needs fastjet, not installed" in result.output
    assert "pip install 'expmatrix[physics]'" in result.output and "Traceback" not in result.output


def test_generate_builtin_writes_what_data_synth_writes(tmp_path):
    args = ["--events", "500", "--seed", "2"]
    synth = CliRunner().invoke(main, ["data", "synth", "fourtops", "--out", str(tmp_path / "a.h5"), *args])
    generate = CliRunner().invoke(main, ["data", "generate", "fourtops", "--generator", "builtin",
                                         "--out", str(tmp_path / "b.h5"), *args])  # fmt: skip
    assert synth.exit_code == generate.exit_code == 0, generate.output
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        assert np.array_equal(a["X_train"][:], b["X_train"][:])


def test_the_config_names_the_generator_only_when_it_is_pythia(tmp_path):
    builtin = DataConfig(synthetic={"events": 1000, "seed": 2})
    pythia = DataConfig(synthetic={"events": 1000, "seed": 2, "generator": "pythia"})
    assert data_selection(builtin)["synthetic"] == {"events": 1000, "seed": 2}
    assert data_selection(pythia)["synthetic"] == {"events": 1000, "seed": 2, "generator": "pythia"}
    assert synthetic_path(tmp_path, builtin).name == "fourtops_synthetic_e1000_s2.h5"
    assert synthetic_path(tmp_path, pythia).name == "fourtops_pythia_e1000_s2.h5"
    with pytest.raises(ValueError, match="pythia makes fourtops events, not icecube"):
        DataConfig(source="icecube", synthetic={"generator": "pythia"})


@pytest.mark.slow
def test_events_are_in_the_layout_ranges(ttbar):
    x = ttbar["x"]
    ids, cont = x[:, :N_OBJECTS], x[:, N_OBJECTS + 2 :].reshape(len(x), N_OBJECTS, 4)
    e, pt, eta, phi = np.moveaxis(cont, 2, 0)
    real = ids > 0
    assert len(x) == 200 and np.isfinite(x).all()
    assert set(np.unique(ids)) <= set(range(8)) and np.all(cont[~real] == 0)
    assert np.all(np.diff(np.where(real, pt, -1), axis=1) <= 0)  # pT-ordered, empty slots last
    assert np.all(real[:, :-1] >= real[:, 1:])
    jets = (ids == 1) | (ids == 2)
    assert pt[jets].min() > 25 and np.abs(eta[jets]).max() < 2.5
    assert np.abs(eta[real]).max() < 2.5 and pt[real & ~jets].min() > 10
    assert np.all((phi[real] >= -np.pi) & (phi[real] < np.pi)) and np.all(
        e[real] >= pt[real] * np.cosh(eta[real]) * 0.999
    )
    assert (np.where(ids < 7, pt, 0).sum(axis=1) > 400).all()  # the HT cut
    assert 4.0 < jets.sum(axis=1).mean() < 7.5  # tt̄ + shower jets
    assert 1.0 < (ids == 2).sum(axis=1).mean() < 2.0  # 2 b at 77% inside the acceptance, a few mistags
    assert np.all((x[:, N_OBJECTS + 1] >= -np.pi) & (x[:, N_OBJECTS + 1] < np.pi))


@pytest.mark.slow
def test_dijet_mass_peaks_at_the_w_and_bjet_plus_w_at_the_top(ttbar):
    light = four_vectors(ttbar["x"], lambda ids: ids == 1)
    bjets = four_vectors(ttbar["x"], lambda ids: ids == 2)
    w_masses, top_masses = [], []
    for jets, bs in zip(light, bjets, strict=True):
        pairs = [mass(a, b) for a, b in combinations(jets[:4], 2)]
        w_masses += pairs
        w_candidates = [a + b for a, b in combinations(jets[:4], 2) if abs(mass(a, b) - W_MASS) < 15]
        top_masses += [mass(b, w) for b in bs for w in w_candidates]
    assert len(w_masses) > 300 and len(top_masses) > 100
    assert abs(peak(w_masses, 20, 200, 10) - W_MASS) < 15
    assert abs(peak(top_masses, 80, 400, 20) - TOP_MASS) < 25


@pytest.mark.slow
def test_met_follows_the_neutrinos_and_lepton_charges_balance(ttbar):
    x, nu = ttbar["x"], np.hypot(*ttbar["nu_pt"].T)
    met = x[:, N_OBJECTS]
    assert np.corrcoef(met, nu)[0, 1] > 0.85
    hard = nu > 50
    assert abs(np.median((met[hard] - nu[hard]) / nu[hard])) < 0.15
    ids = x[:, :N_OBJECTS]
    plus, minus = np.isin(ids, (3, 5)).sum(), np.isin(ids, (4, 6)).sum()
    assert plus + minus > 40 and abs(plus - minus) < 3 * np.sqrt(plus + minus)


@pytest.mark.slow
def test_same_seed_same_events_other_seed_other_events(ttbar):
    # a chunk's events depend on (seed, process, index) only: a shorter one is the start of the fixture's
    a, c = (make_chunk(Chunk("tt", 0, 10), seed=seed, det=Detector()) for seed in (1, 2))
    assert np.array_equal(a["x"], ttbar["x"][:10]) and not np.array_equal(a["x"], c["x"])


@pytest.mark.slow
def test_the_file_is_read_by_the_4tops_reader_and_resumes_from_its_chunks(tmp_path, monkeypatch):
    # A chunk costs a Pythia start and 50 events tried whatever its size: 3 chunks made here, then 2 more
    out = tmp_path / "pythia.h5"
    settings = settings_of(["4t", "tt"], 40, 3, Detector(), 20)
    with monkeypatch.context() as m:  # this run's chunks kept: one of them is the chunk a stopped run left
        m.setattr(chunks, "remove", lambda folder: None)
        write_pythia(out, 40, seed=3, workers=1, processes=["4t", "tt"], chunk_size=20, progress=False)
    with h5py.File(out) as f:
        assert [f[k].shape for k in ("X_train", "X_val", "X_test")] == [(32, 92), (4, 92), (4, 92)]
        assert f.attrs["seed"] == 3 and "pythia8mc 8.317" in f.attrs["generator"]
        first = np.concatenate([f[k][:] for k in ("X_train", "X_val", "X_test")])
    events = read_split(out, "X_train", "Y_train", signal=[1], background=[6], use_met=True, cont_features=[1, 2, 3])
    assert sorted(set(events.process.tolist())) == [1, 6] and events.label.sum() == (events.process == 1).sum()

    # a stopped run left one finished chunk (marked here by a huge MET): it is used as it is, the rest is made,
    # by 2 workers: apart from the mark, the file is the first one (the same seed and settings, other workers)
    again = tmp_path / "again.h5"
    folder = parts_folder(again, settings)
    chunk = plan(["4t", "tt"], 40, 20)[0]
    marked = dict(np.load(parts_folder(out, settings) / chunk.name))
    marked["x"][:, N_OBJECTS] += 10_000
    np.savez(folder / chunk.name, **marked)
    write_pythia(again, 40, seed=3, workers=2, processes=["4t", "tt"], chunk_size=20, progress=False)
    with h5py.File(again) as f:
        x = np.concatenate([f[k][:] for k in ("X_train", "X_val", "X_test")])
    met, mark = x[:, N_OBJECTS], x[:, N_OBJECTS] > 10_000
    assert mark.sum() == 20 and not folder.exists()
    assert np.array_equal(np.delete(x, N_OBJECTS, axis=1), np.delete(first, N_OBJECTS, axis=1))
    assert np.array_equal(met[~mark], first[~mark, N_OBJECTS])
    assert np.allclose(met[mark] - 10_000, first[mark, N_OBJECTS], atol=0.01)
    with pytest.raises(DataError, match="chunks of a generation with other settings"):
        parts_folder(again, settings).joinpath("x").touch()
        write_pythia(again, 60, seed=3, workers=1, processes=["4t", "tt"], chunk_size=20, progress=False)
