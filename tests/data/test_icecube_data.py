"""The icecube source: generator geometry and physics, determinism, the reader and its errors, the spec."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from pydantic import ValidationError

from expmatrix.assembly.fits import tokenizer_for
from expmatrix.assembly.parts import Assembly
from expmatrix.assembly.recipe import Recipe
from expmatrix.cli import main
from expmatrix.config import JobConfig, SpecError
from expmatrix.data import DataError, data_selection, synthetic_path
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.data.icecube_synthetic import (
    MAX_PULSES,
    N_GROUP,
    T0,
    THETA_C,
    C,
    arrival_times,
    sensor_positions,
    simulate,
    unit_vector,
    write_icecube,
)
from expmatrix.data.pulses import read_pulses
from expmatrix.inert import check_consumed, consumed_keys, unread
from expmatrix.matrix import build_matrix
from expmatrix.store import RunStore

EXPERIMENT = REPO / "experiments" / "icecube_direction.yaml"
TIME, CHARGE, X, Y, Z, SENSOR, AUX = range(7)


@pytest.fixture(scope="module")
def pulse_file(tmp_path_factory):
    return write_icecube(tmp_path_factory.mktemp("ice") / "pulses.h5", events=600, seed=5)


def test_detector_geometry():
    pos = sensor_positions()
    assert pos.shape == (5160, 3)
    strings = pos[::60, :2]
    assert len(np.unique(strings, axis=0)) == 86 and (pos.reshape(86, 60, 3)[:, :, :2] == strings[:, None]).all()
    gaps = np.linalg.norm(strings[:, None] - strings[None], axis=-1) + np.eye(86) * 1e9
    np.testing.assert_allclose(gaps.min(axis=1), 125.0)  # every string has a neighbour 125 m away
    assert pos[:60, 2].max() == 500 and pos[:60, 2].min() == -500 and len(np.unique(pos[:, 2])) == 60


def test_direct_light_time_of_a_vertical_track_by_hand():
    """Down-going muon along the z axis, at z = 0 at t0: a sensor on the axis sees it at t0 - z / c; one at
    distance d sees the cone: t0 + (-z - d / tan(theta_c)) / c + n d / (c sin(theta_c))."""
    pos = np.array([[0.0, 0.0, 300.0], [0.0, 0.0, -200.0], [80.0, 0.0, 100.0]])
    t, d = arrival_times(pos, np.zeros((1, 3)), np.array([[0.0, 0.0, -1.0]]), np.array([T0]))
    z, dist = np.array([300.0, -200.0, 100.0]), np.array([0.1, 0.1, 80.0])  # on the axis: clamped at 0.1 m
    np.testing.assert_allclose(d[0], dist)
    cone = T0 + (-z - dist / np.tan(THETA_C)) / C + N_GROUP * dist / (C * np.sin(THETA_C))
    np.testing.assert_allclose(t[0], cone, rtol=1e-12)
    np.testing.assert_allclose(t[0, :2], [T0 - 300 / C, T0 + 200 / C], atol=0.31)  # 0.1 m off the axis: 0.3 ns


def test_simulated_pulses_follow_the_track_geometry():
    pos = sensor_positions()
    pulses, n, triggered, truth = simulate(np.random.default_rng(1), 256, pos)
    real = np.arange(MAX_PULSES)[None] < n[:, None]
    sensor = pulses[..., SENSOR].astype(int)
    assert (pulses[..., SENSOR] == sensor).all() and sensor[real].min() >= 0 and sensor[real].max() < 5160
    np.testing.assert_allclose(pulses[..., X:SENSOR][real], pos[sensor[real]], atol=1e-3)  # x, y, z of the sensor
    times = np.where(real, pulses[..., TIME], 1e30)
    assert (np.diff(times, axis=1)[real[:, 1:]] >= 0).all()  # time-ordered
    assert set(np.unique(pulses[..., AUX][real])) == {0.0, 1.0} and (pulses[..., CHARGE][real] > 0).all()
    assert not pulses[~real].any()  # padding rows are 0
    event = np.nonzero(real)[0]
    signal = truth.hit[event, sensor[real]]  # a pulse at a sensor the muon's light reached
    residual = pulses[..., TIME][real][signal] - truth.t_geo[event[signal], sensor[real][signal]]
    assert np.quantile(residual, 0.005) > -12  # 3 ns jitter: never much before the direct light
    assert 3 < np.median(residual) < 30  # scattering delays the light by a few ns to tens of ns
    assert 0.6 < signal.mean() < 0.95  # the rest is noise
    assert 0.5 < triggered.mean() < 1.0
    np.testing.assert_allclose(np.linalg.norm(truth.direction, axis=1), 1.0)
    assert 8e3 < np.median(pulses[..., TIME][real]) < 1.2e4  # absolute times ~1e4 ns as in the real data


@pytest.mark.slow
def test_written_file_is_deterministic_and_triggered(pulse_file, tmp_path):
    again = write_icecube(tmp_path / "again.h5", events=600, seed=5)
    other = write_icecube(tmp_path / "other.h5", events=600, seed=6)
    with h5py.File(pulse_file) as a, h5py.File(again) as b, h5py.File(other) as c:
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k][:], b[k][:]) for k in a)
        assert not np.array_equal(a["direction_train"][:], c["direction_train"][:])
        assert [len(a[f"n_pulses_{s}"]) for s in ("train", "val", "test")] == [480, 60, 60]
        assert json.loads(a["pulses_train"].attrs["features"]) == list(PULSE_FEATURES)
        n, pulses, direction = a["n_pulses_train"][:], a["pulses_train"][:], a["direction_train"][:]
        zen, az = a["zenith_train"][:], a["azimuth_train"][:]
    np.testing.assert_allclose(direction, unit_vector(zen.astype(float), az.astype(float)), atol=1e-6)
    real = np.arange(MAX_PULSES)[None] < n[:, None]
    assert (((pulses[..., AUX] == 0) & real).sum(axis=1) >= 8).all()  # the SMT8-like trigger
    assert n.max() == MAX_PULSES and (n >= 20).mean() > 0.8
    assert abs(direction[:, 2].mean()) < 0.1  # isotropic: as many up- as down-going


def test_reader_selects_named_columns_and_the_direction(pulse_file, tmp_path):
    events = read_pulses(pulse_file, "val", ("time", "sensor_id"), fraction=0.5)
    with h5py.File(pulse_file) as f:
        n, raw, direction = f["n_pulses_val"][:30], f["pulses_val"][:30], f["direction_val"][:30]
    assert len(events) == 30 and events.feature_names == ("time", "sensor_id")
    assert (events.ids.sum(axis=1) == n).all() and events.globals_ is None
    np.testing.assert_array_equal(events.cont, raw[:, :, [TIME, SENSOR]])
    np.testing.assert_array_equal(events.target, direction)
    # a real file with its own column order and an extra column: columns are found by name
    shuffled = tmp_path / "real.h5"
    with h5py.File(pulse_file) as f, h5py.File(shuffled, "w") as g:
        for k in f:
            g[k] = f[k][:]
        cols = ["charge", "extra", "time", "sensor_id", "auxiliary", "x", "y", "z"]
        order = [CHARGE, TIME, TIME, SENSOR, AUX, X, Y, Z]
        del g["pulses_val"]
        g.create_dataset("pulses_val", data=f["pulses_val"][:][..., order]).attrs["features"] = json.dumps(cols)
    again = read_pulses(shuffled, "val", ("time", "sensor_id"), fraction=0.5)
    np.testing.assert_array_equal(again.cont, events.cont)


def _broken(src, tmp_path, change):
    path = tmp_path / "broken.h5"
    shutil.copy(src, path)
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def _replace(name, data, attrs=None):
    def change(f):
        keep = dict(f[name].attrs) if attrs is None else attrs
        del f[name]
        f.create_dataset(name, data=data).attrs.update(keep)

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.__delitem__("direction_test"), r"dataset 'direction_test' not found"),
        (_replace("direction_test", np.ones((60, 2), np.float32)), r"'direction_test' has shape \(60, 2\); expected"),
        (_replace("direction_test", np.tile([[0, 0, 2.0]], (60, 1))), r"'direction_test' holds 60 vectors that are no"),
        (_replace("n_pulses_test", np.zeros(60, np.int32)), r"'n_pulses_test' holds 0 at event 0; expected 1..128"),
        (_replace("pulses_test", np.full((60, 128, 7), np.nan, np.float32)), r"'pulses_test' has NaN/inf in 60 event"),
        (_replace("pulses_test", np.zeros((60, 128, 7), np.float32), {}), r"'pulses_test' has no `features` attribut"),
        (_replace("pulses_test", np.zeros((60, 128), np.float32)), r"'pulses_test' has shape \(60, 128\); expected"),
    ],
)
def test_reader_errors_name_file_and_dataset(pulse_file, tmp_path, change, message):
    path = _broken(pulse_file, tmp_path, change)
    with pytest.raises(DataError, match=message) as e:
        read_pulses(path, "test", PULSE_FEATURES)
    assert str(path) in str(e.value)


def test_reader_names_missing_columns(pulse_file):
    with pytest.raises(DataError, match=r"'pulses_train' has no columns \['energy'\] \(the tokenizer needs"):
        read_pulses(pulse_file, "train", ("time", "energy"))


# ---------------------------------------------------------------- spec


def _experiment(tmp_path, **changes):
    spec = yaml.safe_load(EXPERIMENT.read_text())
    spec["presets"] = str(REPO / "tokenizers" / "icecube")
    for key, value in changes.items():
        section, _, name = key.partition(".")
        spec.setdefault(section, {})[name] = value
        if value is None:  # removed
            del spec[section][name]
    path = tmp_path / "ice.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"base.train": {"loss": "cross_entropy"}}, r"base\.train\.loss: cross_entropy needs class labels; data\.sour"),
        ({"base.train": None}, r"ice\.yaml: train\.loss: cross_entropy needs class labels; data.source icecube is"),
        ({"data.use_met": False}, r"ice\.yaml: data\.use_met: Value error, a fourtops setting; data\.source icecube"),
        ({"data.task": {"signal": [1]}}, r"data\.task: Value error, a fourtops setting"),
        ({"data.source": "fourtops"}, r"base\.train\.loss: vmf needs regression targets; data\.source fourtops is cl"),
    ],
)
def test_the_source_decides_the_task_and_its_settings(tmp_path, changes, message):
    with pytest.raises(SpecError, match=message):
        build_matrix(_experiment(tmp_path, **changes))



@pytest.mark.parametrize(
    "setting, message",
    [
        ({"fit_on": "background"}, r"tokenizer\.fit_on\n.*has no effect on data\.source icecube: every event is"),
        ({"per_object_type": True}, r"tokenizer\.per_object_type\n.*no effect on data\.source icecube: every pulse"),
    ],
)
def test_binning_settings_about_types_and_classes_are_inert_on_pulses(setting, message):
    tokenizer = {"kind": "binned", "name": "b", "rules": {"time": "quantile", "charge": "quantile", "z": "quantile"}}
    job = {"data": {"source": "icecube"}, "tokenizer": tokenizer, "train": {"loss": "vmf"}}
    JobConfig.model_validate(job)  # the plain binned preset is fine on pulses
    with pytest.raises(ValidationError, match=message):
        JobConfig.model_validate(job | {"tokenizer": tokenizer | setting})


def test_an_object_type_embedding_on_pulses_is_rejected_where_it_is_set(tmp_path):
    with pytest.raises(SpecError, match=r"ice\.yaml: base\.tokenizer\.object_type: has no effect on data\.source"):
        build_matrix(_experiment(tmp_path, **{"base.tokenizer.object_type": True}))

def test_a_fourtops_tokenizer_on_pulses_is_an_error_before_anything_runs():
    matrix = build_matrix(EXPERIMENT, "quick")  # the first cell: direct_icecube
    cfg = matrix.jobs[0].config
    fourtops_direct = {"kind": "direct", "name": "direct", "object_type": False}
    four = JobConfig.model_validate({**cfg.model_dump(), "tokenizer": fourtops_direct})
    assert tokenizer_for(cfg).features == ("time", "charge", "x", "y", "z") and not tokenizer_for(cfg).use_met
    with pytest.raises(SpecError, match=r"tokenizer 'direct' declares features \['E', 'pT', 'eta', 'phi', 'MET', 'M"):
        tokenizer_for(four)


def test_inert_check_passes_the_experiment_and_flags_fourtops_keys(tmp_path):
    matrix = build_matrix(EXPERIMENT, "quick")
    check_consumed(matrix, RunStore(tmp_path, matrix.spec.name))  # every key the experiment sets is read
    reads = consumed_keys(matrix.jobs[0].config)
    assert unread({"data.use_met": "data.use_met", "data.unit": "base.data.unit"}, reads) == [
        "data.use_met",
        "base.data.unit",
    ]
    assert {k for k in reads if k.startswith("data.")} == {
        "data.source", "data.path", "data.max_events", "data.synthetic#", "data.synthetic.events",
        "data.synthetic.seed", "data.synthetic.generator", "data.pulses#", "data.pulses.max", "data.stream",
    }  # fmt: skip


def test_cache_keys_never_mix_sources(tmp_path):
    job = build_matrix(EXPERIMENT, "quick").jobs[0]
    ice = job.config
    four = JobConfig.model_validate({**ice.model_dump(), "data": {"path": "synthetic", "synthetic": {"events": 3000}},
                                     "train": {"loss": "cross_entropy"}})  # fmt: skip
    assert data_selection(ice.data) == {"source": "icecube", "max_events": None,
                                        "synthetic": {"events": 3000, "seed": 0}}  # fmt: skip
    assert data_selection(four.data)["source"] == "fourtops"
    assert "use_met" not in ice.model_dump()["data"] and "task" not in ice.model_dump()["data"]
    assert Recipe.of(job).fit_key != Recipe.of(replace(job, config=four)).fit_key
    cache = RunStore(tmp_path, "x").paths.cache.dir
    assert synthetic_path(cache, ice.data).name == "icecube_synthetic_e3000_s0.h5"
    assert synthetic_path(cache, four.data).name == "fourtops_synthetic_e3000_s0.h5"


def test_a_file_in_the_layout_works_through_data_path(pulse_file, tmp_path):
    job, store = build_matrix(EXPERIMENT, "quick").jobs[0], RunStore(tmp_path, "x")

    def splits_of(data: dict) -> dict:
        cfg = JobConfig.model_validate({**job.config.model_dump(), "data": data})
        return Assembly(replace(job, config=cfg, data_path=str(pulse_file)), store).splits

    splits = splits_of({"source": "icecube", "path": str(pulse_file)})
    assert {s: len(e) for s, e in splits.items()} == {"train": 480, "val": 60, "test": 60}
    assert splits["train"].feature_names == ("time", "charge", "x", "y", "z") and splits["test"].target.shape == (60, 3)
    capped = splits_of({"source": "icecube", "path": str(pulse_file), "max_events": 120})
    assert {s: len(e) for s, e in capped.items()} == {"train": 120, "val": 15, "test": 15}
    assert not list(tmp_path.iterdir())  # a file path generates nothing


def test_data_synth_writes_the_icecube_layout(tmp_path):
    out = tmp_path / "ice.h5"
    result = CliRunner().invoke(main, ["data", "synth", "icecube", "--out", str(out), "--events", "200", "--seed", "5"])
    assert result.exit_code == 0 and "200 events" in result.output
    events = read_pulses(out, "test", PULSE_FEATURES)
    assert len(events) == 20 and events.cont.shape[1:] == (MAX_PULSES, 7)


@pytest.mark.slow
def test_data_explore_on_pulses_gives_the_numbers_phase_1_asks_for(pulse_file, tmp_path):
    from expmatrix.config import load_preset
    from expmatrix.tools.explore import explore

    preset = load_preset("integer_icecube", str(REPO / "tokenizers" / "icecube"))
    e = explore(pulse_file, split="val", max_events=None, plots=tmp_path / "h", tokenizer=preset)
    with h5py.File(pulse_file) as f:
        n, pulses = f["n_pulses_val"][:], f["pulses_val"][:]
    real = np.arange(pulses.shape[1]) < n[:, None]
    stats = {row[0]: row for row in e.stats}
    assert list(stats) == [*PULSE_FEATURES, "time_after_first"] and e.rows == len(n)
    assert all(row[1] == real.sum() and row[-1] == 0 for row in e.stats)  # real pulses only, none invalid
    first = np.where(real, pulses[..., 0], np.inf).min(axis=1, keepdims=True)
    assert stats["time_after_first"][2:4] == [0, (pulses[..., 0] - first)[real].max()]
    assert e.types[0][1] == pytest.approx(n.mean()) and e.types[2][1] == (n == pulses.shape[1]).sum()
    assert [row[:2] for row in e.vocab] == [["time", 2002], ["charge", 34], ["sensor_id", 5162], ["auxiliary", 4]]
    assert sorted(p.name for p in e.plots) == sorted(f"{f}.png" for f in stats)
    out = CliRunner().invoke(main, ["data", "explore", str(pulse_file), "--split", "test", "--format", "markdown"])
    assert out.exit_code == 0 and "| time_after_first |" in out.output and "events at the cap" in out.output
