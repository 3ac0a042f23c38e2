"""The ragged pulse layout, pulse selection and the long-event generator: the same events give the same tokens
from either layout, bad offsets and sensors are errors naming file, dataset and event, selections by hand."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from expmatrix.assembly.fits import tokenizer_for
from expmatrix.config import DataConfig, JobConfig, ModelConfig, Presets, PulsesConfig
from expmatrix.data import DataError, data_selection
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.data.icecube_long import simulate_long
from expmatrix.data.icecube_ragged import RaggedWriter
from expmatrix.data.icecube_synthetic import sensor_positions, write_icecube
from expmatrix.data.pulses import read_pulses

PRESETS = Presets(__import__("conftest").REPO / "tokenizers" / "icecube")
TIME, CHARGE, X, Y, Z, SENSOR, AUX = range(7)


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    """The same 300 events in the padded layout (the tracks generator) and in the ragged one."""
    folder = tmp_path_factory.mktemp("layouts")
    padded = write_icecube(folder / "padded.h5", events=300, seed=3)
    ragged = folder / "ragged.h5"
    with h5py.File(padded) as f, RaggedWriter(ragged, PULSE_FEATURES, geometry=sensor_positions()) as out:
        for split in ("train", "val", "test"):
            n, raw = f[f"n_pulses_{split}"][:], f[f"pulses_{split}"][:]
            real = np.arange(raw.shape[1])[None] < n[:, None]
            out.append(split, raw[real], n, f[f"direction_{split}"][:])
    return padded, ragged


def _tokens(name: str, path, pulses=None) -> dict[str, torch.Tensor]:
    cfg = JobConfig.model_validate(
        {"data": {"source": "icecube"}, "tokenizer": PRESETS.get(name, "test"), "train": {"loss": "vmf"}}
    )
    tok = tokenizer_for(cfg)
    features = tok.features
    tok.fit(read_pulses(path, "train", features, pulses=pulses))
    return tok.transform(read_pulses(path, "val", features, pulses=pulses))


@pytest.mark.parametrize("name", ["direct_icecube", "integer_icecube"])
@pytest.mark.parametrize("pulses", [None, PulsesConfig(max=40, select="nonaux_first")])
def test_ragged_and_padded_layouts_give_identical_tokens(both_layouts, name, pulses):
    padded, ragged = both_layouts
    with h5py.File(padded) as f:
        assert f["n_pulses_val"][:].max() == 128  # the ragged table pads to the longest event: the same width
    a, b = _tokens(name, padded, pulses), _tokens(name, ragged, pulses)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["mask"].shape[1] == (128 if pulses is None else 40) and a["mask"].sum() > 900


def _one_event_file(path, pulses: np.ndarray, features=PULSE_FEATURES, **kw):
    with RaggedWriter(path, features, **kw) as out:
        for split in ("train", "val", "test"):
            out.append(split, pulses, [len(pulses)], np.array([[0.0, 0.0, 1.0]], np.float32))
    return path


def test_each_selection_keeps_the_pulses_it_names_in_time_order(tmp_path):
    time = np.arange(1.0, 7.0)
    charge = np.array([0.5, 3.0, 1.0, 9.0, 2.0, 0.7])
    aux = np.array([1, 0, 1, 0, 1, 0])
    pulses = np.zeros((6, 7), np.float32)
    pulses[:, TIME], pulses[:, CHARGE], pulses[:, AUX], pulses[:, SENSOR] = time, charge, aux, [5, 5, 7, 7, 7, 9]
    path = _one_event_file(tmp_path / "one.h5", pulses)

    def kept(select: str) -> list[float]:
        ev = read_pulses(path, "test", ("time",), pulses=PulsesConfig(max=3, select=select))
        assert ev.cont.shape == (1, 3, 1) and ev.length.tolist() == [6]  # the length in the file is kept
        return ev.cont[0, :, 0].tolist()

    assert kept("time") == [1, 2, 3]
    assert kept("nonaux_first") == [2, 4, 6]
    assert kept("charge") == [2, 4, 5]
    random = kept("random")
    assert random == sorted(random) and len(set(random)) == 3 and random == kept("random")
    every = read_pulses(path, "test", ("time",), sensors=True)
    assert every.cont[0, :, 0].tolist() == time.tolist() and every.sensors[0, :, 0].tolist() == [5, 5, 7, 7, 7, 9]


@pytest.mark.parametrize(
    "offsets,message",
    [
        ([0, 2, 2, 6], r"'offsets_val' has an empty event at event 1 \(offsets 2 -> 2\)"),
        ([0, 4, 2, 6], r"'offsets_val' has offsets that decrease at event 1 \(offsets 4 -> 2\)"),
        ([0, 2, 4, 9], r"'offsets_val' ends at 9 but 'pulses_val' holds 6 rows; event 2 ends past it"),
        ([0, 2, 4], r"'offsets_val' ends at 4 but 'pulses_val' holds 6 rows"),
        ([0, 2, 6], r"'direction_val' has shape \(3, 3\); expected \(2, 3\)"),
    ],
)
def test_bad_offsets_name_file_dataset_and_event(tmp_path, offsets, message):
    path = _one_event_file(tmp_path / "bad.h5", np.ones((6, 7), np.float32))
    with h5py.File(path, "r+") as f:
        for split in ("val",):
            f[f"direction_{split}"].resize(3, axis=0)
            f[f"direction_{split}"][:] = [[0, 0, 1]] * 3
            del f[f"offsets_{split}"]
            f[f"offsets_{split}"] = np.array(offsets)
    with pytest.raises(DataError, match=f"{path}: dataset " + message):
        read_pulses(path, "val", ("time",))


def test_bad_sensors_and_missing_columns_are_errors_before_training(tmp_path):
    pulses = np.ones((4, 7), np.float32)
    pulses[2, SENSOR] = 6000
    path = _one_event_file(tmp_path / "sensor.h5", pulses, geometry=sensor_positions())
    read_pulses(path, "train", ("time",))  # the flat model does not read sensors
    with pytest.raises(DataError, match=r"'pulses_train' event 0 holds sensor_id 6000 outside the geometry table "
                                        r"\(0..5159, dataset 'geometry'\)"):  # fmt: skip
        read_pulses(path, "train", ("time",), sensors=True)
    no_aux = _one_event_file(tmp_path / "noaux.h5", np.ones((4, 6), np.float32), features=PULSE_FEATURES[:6])
    with pytest.raises(DataError, match=r"no columns \['auxiliary'\] \(data.pulses.select nonaux_first needs them\)"):
        read_pulses(no_aux, "train", ("time",), pulses=PulsesConfig(max=2, select="nonaux_first"))
    assert read_pulses(no_aux, "train", ("time",), pulses=PulsesConfig(max=2, select="time")).cont.shape == (1, 2, 1)


def test_writer_refuses_counts_that_do_not_match_the_pulses(tmp_path):
    with pytest.raises(DataError, match="2 events of 5 pulses"), RaggedWriter(tmp_path / "w.h5", ("time",)) as w:
        w.append("train", np.ones((4, 1), np.float32), [2, 3], np.zeros((2, 3), np.float32))
    assert not (tmp_path / "w.h5").exists()  # nothing half-written


def test_long_events_have_several_pulses_per_sensor_and_a_heavy_tail():
    pulses, counts, triggered, direction = simulate_long(np.random.default_rng(2), 256, sensor_positions())
    assert counts.sum() == len(pulses) and pulses.shape[1] == 7
    event = np.repeat(np.arange(len(counts)), counts)
    assert (np.diff(pulses[:, TIME])[np.diff(event) == 0] >= 0).all()  # time-ordered inside each event
    per_sensor = np.unique(event * 5160 + pulses[:, SENSOR].astype(int), return_counts=True)[1]
    assert per_sensor.max() > 20 and np.median(per_sensor) == 1  # most sensors one pulse, a few many
    assert set(np.unique(pulses[:, AUX])) == {0.0, 1.0}
    kept = counts[triggered]
    assert np.median(kept) < 100 and kept.max() > 1000  # most events short, a long tail
    np.testing.assert_allclose(np.linalg.norm(direction, axis=1), 1.0)


def test_pulse_settings_stay_out_of_existing_ids_and_are_refused_where_inert():
    plain = DataConfig(source="icecube").model_dump()
    assert "pulses" not in plain and "generator" not in plain["synthetic"]
    chosen = DataConfig(source="icecube", pulses={"max": 128, "select": "nonaux_first"})
    assert data_selection(chosen)["pulses"] == {"max": 128, "select": "nonaux_first"}
    with pytest.raises(ValidationError, match="select has no effect without data.pulses.max"):
        DataConfig(source="icecube", pulses={"select": "charge"})
    with pytest.raises(ValidationError, match="fourtops has objects, not pulses"):
        DataConfig(pulses={"max": 10})
    with pytest.raises(ValidationError, match="generator: long makes icecube events, not fourtops"):
        DataConfig(synthetic={"generator": "long"})
    with pytest.raises(ValidationError, match=r"model.kind\n.*groups pulses by sensor; data.source fourtops"):
        JobConfig.model_validate({"data": {}, "tokenizer": PRESETS.get("direct_icecube", "t"),
                                  "model": {"kind": "hierarchical"}})  # fmt: skip
    assert "kind" not in ModelConfig().model_dump()
    with pytest.raises(ValidationError, match="dom_layers has no effect in the flat model"):
        ModelConfig(dom_layers=1)


def test_the_ragged_file_records_its_columns_and_geometry(both_layouts):
    with h5py.File(both_layouts[1]) as f:
        assert json.loads(f["pulses_train"].attrs["features"]) == list(PULSE_FEATURES)
        assert f["geometry"].shape == (5160, 3) and f["offsets_train"][0] == 0
        assert f["offsets_train"][-1] == len(f["pulses_train"])


@pytest.mark.slow
def test_the_long_events_experiment_sets_only_keys_that_are_read(tmp_path):
    from expmatrix.inert import check_consumed
    from expmatrix.matrix import build_matrix
    from expmatrix.store import RunStore

    matrix = build_matrix(__import__("conftest").REPO / "experiments" / "icecube_long_events.yaml", "quick")
    check_consumed(matrix, RunStore(tmp_path, matrix.spec.name))
    kinds = {j.levels["reader"]: (j.config.model.kind, j.config.data.pulses.max) for j in matrix.jobs}
    assert kinds["hierarchical"] == ("hierarchical", None) and kinds["flat_L128_nonaux"] == ("flat", 128)
    assert len(matrix.jobs) == 10 and len({j.id for j in matrix.jobs}) == 10
