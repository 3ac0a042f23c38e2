"""The IceCube Kaggle layout (meta parquet, batch parquets, sensor geometry) converted to the pulse layout."""

from __future__ import annotations

import h5py
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from expmatrix.cli import main
from expmatrix.data import DataError
from expmatrix.data.icecube import PULSE_FEATURES
from expmatrix.data.icecube_kaggle import convert_kaggle
from expmatrix.data.icecube_synthetic import sensor_positions
from expmatrix.data.pulses import read_pulses

# batch 1: event 11 has 6 pulses (trimmed to 4 below), event 12 has 2; batch 7: event 70 has 3
PULSES = {
    1: {
        "event_id": [11] * 6 + [12] * 2,
        "time": [50, 40, 10, 30, 20, 5, 7, 3],
        "sensor_id": [0, 1, 2, 3, 4, 5, 5159, 60],
        "charge": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5, 0.25],
        "auxiliary": [True, False, True, False, False, True, False, True],
    },
    7: {"event_id": [70] * 3, "time": [9, 8, 7], "sensor_id": [10, 11, 12], "charge": [1.0, 1.0, 1.0],
        "auxiliary": [False] * 3},  # fmt: skip
}
META = {
    "batch_id": [1, 1, 7],
    "event_id": [11, 12, 70],
    "first_pulse_index": [0, 6, 0],
    "last_pulse_index": [5, 7, 2],
    "azimuth": [0.0, np.pi / 2, 1.0],
    "zenith": [np.pi / 2, np.pi / 2, 0.0],
}


@pytest.fixture
def kaggle(tmp_path):
    folder = tmp_path / "kaggle"
    (folder / "train").mkdir(parents=True)
    pos = sensor_positions()
    pl.DataFrame({"sensor_id": np.arange(len(pos)), "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2]}).write_csv(
        folder / "sensor_geometry.csv"
    )
    for b, rows in PULSES.items():
        pl.DataFrame(rows).write_parquet(folder / "train" / f"batch_{b}.parquet")
    pl.DataFrame(META).write_parquet(folder / "train_meta.parquet")
    batches = [folder / "train" / "batch_1.parquet", folder / "train" / "batch_7.parquet"]
    return folder / "train_meta.parquet", folder / "sensor_geometry.csv", batches


def test_events_keep_their_trigger_pulses_first_in_time_order_with_positions_and_direction(kaggle, tmp_path):
    meta, geometry, batches = kaggle
    out = tmp_path / "pulses.h5"
    report = convert_kaggle(meta, geometry, batches, out, max_pulses=4, fractions=(1.0, 0.0, 0.0))
    assert report == {"events": {"train": 3, "val": 0, "test": 0}, "truncated": 1, "max_pulses": 4}
    ev = read_pulses(out, "train", PULSE_FEATURES)
    n = ev.real.sum(1).tolist()
    assert sorted(n[:2]) == [2, 4] and n[2] == 3  # batch 1's events (in random order), then batch 7's
    e11, e12, e70 = n.index(4), n.index(2), 2
    col = {f: ev.cont[..., k] for k, f in enumerate(PULSE_FEATURES)}
    # event 11: the 3 non-auxiliary pulses (t 40, 30, 20) and the earliest auxiliary one (t 5), in time order
    assert col["time"][e11].tolist() == [5, 20, 30, 40] and col["auxiliary"][e11].tolist() == [1, 0, 0, 0]
    assert col["sensor_id"][e11].tolist() == [5, 4, 3, 1] and col["charge"][e11].tolist() == [6, 5, 4, 2]
    pos = sensor_positions()
    assert np.array_equal(np.stack([col[c][e11] for c in "xyz"], -1), pos[[5, 4, 3, 1]].astype(np.float32))
    assert col["time"][e12, :2].tolist() == [3, 7] and col["sensor_id"][e70, :3].tolist() == [12, 11, 10]
    # azimuth 0, zenith pi/2 -> +x; azimuth pi/2 -> +y; zenith 0 -> +z (where the neutrino came from)
    np.testing.assert_allclose(ev.target[[e11, e12, e70]], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], atol=1e-7)


def test_splits_are_random_per_event_and_reproducible(kaggle, tmp_path):
    meta, geometry, batches = kaggle
    files = [convert_kaggle(meta, geometry, batches, tmp_path / f"{i}.h5", fractions=(0.4, 0.3, 0.3), seed=3)
             for i in range(2)]  # fmt: skip
    assert sum(files[0]["events"].values()) == 3 and files[0] == files[1]
    with h5py.File(tmp_path / "0.h5") as a, h5py.File(tmp_path / "1.h5") as b:
        for split in ("train", "val", "test"):
            assert np.array_equal(a[f"pulses_{split}"][:], b[f"pulses_{split}"][:])


@pytest.mark.parametrize(
    "broken, message",
    [
        ("meta_column", r"train_meta\.parquet: event meta file has no columns \['zenith'\]"),
        ("batch_name", r"pulses_1\.parquet: expected a Kaggle batch file named batch_<n>\.parquet"),
        ("indices", r"batch_1\.parquet: its rows do not match the pulse indices of batch 1"),
        ("sensor", r"sensor_id outside 0\.\.5159"),
    ],
)
def test_bad_kaggle_inputs_are_named_and_leave_no_file(kaggle, tmp_path, broken, message):
    meta, geometry, batches = kaggle
    if broken == "meta_column":
        pl.read_parquet(meta).drop("zenith").write_parquet(meta)
    elif broken == "batch_name":
        batches[0] = batches[0].rename(batches[0].with_name("pulses_1.parquet"))
    elif broken == "indices":
        pl.read_parquet(meta).with_columns(pl.Series("first_pulse_index", [1, 6, 0])).write_parquet(meta)
    else:
        pl.DataFrame(PULSES[1]).with_columns(pl.Series("sensor_id", [0, 1, 2, 3, 4, 5, 5160, 60])).write_parquet(
            batches[0]
        )
    with pytest.raises(DataError, match=message):
        convert_kaggle(meta, geometry, batches, tmp_path / "out.h5")
    assert not list(tmp_path.glob("*out.h5*"))


def test_the_cli_converts_and_the_file_explores(kaggle, tmp_path):
    meta, geometry, batches = kaggle
    out = tmp_path / "k.h5"
    args = ["data", "icecube-kaggle", str(meta), str(geometry), *map(str, batches), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--max-pulses", "5", "--fractions", "1,0,0"])
    assert result.exit_code == 0 and "train 3, val 0, test 0 events; 1 had more than 5 pulses" in result.output
    explored = CliRunner().invoke(main, ["data", "explore", str(out)])
    assert explored.exit_code == 0 and "pulses per event (mean)" in explored.output
    bad = CliRunner().invoke(main, [*args, "--fractions", "0.5,0.1"])
    assert bad.exit_code == 1 and "fractions must be three shares" in bad.output
    bad = CliRunner().invoke(main, [*args, "--fractions", "0.8,x,0.1"])
    assert bad.exit_code == 2 and "'0.8,x,0.1': expected three numbers" in bad.output
    empty = CliRunner().invoke(main, ["data", "explore", str(out), "--split", "val"])
    assert empty.exit_code == 1 and "split val holds no events" in empty.output


def test_a_meta_file_with_some_events_of_a_batch_converts_those_events(kaggle, tmp_path):
    meta, geometry, batches = kaggle
    pl.read_parquet(meta).filter(pl.col("event_id") != 11).write_parquet(meta)  # event 12 starts at row 6
    convert_kaggle(meta, geometry, batches, tmp_path / "some.h5", fractions=(1.0, 0.0, 0.0))
    ev = read_pulses(tmp_path / "some.h5", "train", ("time", "sensor_id"))
    assert ev.cont[0, :2].tolist() == [[3, 60], [7, 5159]] and ev.real.sum(1).tolist() == [2, 3]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"first_pulse_index": [0, 2, 0], "last_pulse_index": [5, 2, 2]}, r"rows do not match the pulse indices"),
        ({"azimuth": [0.0, np.nan, 1.0]}, r"batch 1 has events with NaN/inf azimuth or zenith"),
    ],
)
def test_overlapping_events_and_nan_angles_are_rejected(kaggle, tmp_path, change, message):
    meta, geometry, batches = kaggle
    pl.DataFrame(META | change).write_parquet(meta)
    with pytest.raises(DataError, match=message):
        convert_kaggle(meta, geometry, batches, tmp_path / "out.h5")


def test_a_batch_given_twice_and_nan_pulses_are_rejected(kaggle, tmp_path):
    meta, geometry, batches = kaggle
    with pytest.raises(DataError, match=r"batches \[1\] are given more than once"):
        convert_kaggle(meta, geometry, [batches[0], *batches], tmp_path / "out.h5")
    pl.DataFrame(PULSES[1] | {"charge": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 0.5, 0.25]}).write_parquet(batches[0])
    with pytest.raises(DataError, match=r"batch_1\.parquet: columns \['charge'\] hold nulls or NaN/inf"):
        convert_kaggle(meta, geometry, batches, tmp_path / "out.h5")
    assert not list(tmp_path.glob("*out.h5*"))


def test_without_max_pulses_every_pulse_is_written_ragged_in_time_order(kaggle, tmp_path):
    meta, geometry, batches = kaggle
    out = tmp_path / "ragged.h5"
    result = CliRunner().invoke(main, ["data", "icecube-kaggle", str(meta), str(geometry), *map(str, batches),
                                       "--out", str(out), "--fractions", "1,0,0"])  # fmt: skip
    assert result.exit_code == 0 and "train 3, val 0, test 0 events; every pulse (ragged)" in result.output
    with h5py.File(out) as f:
        assert "offsets_train" in f and "n_pulses_train" not in f and f["geometry"].shape == (5160, 3)
    ev = read_pulses(out, "train", PULSE_FEATURES)
    n = ev.real.sum(1).tolist()
    e11 = n.index(6)
    assert sorted(n) == [2, 3, 6] and ev.length.tolist() == n
    assert ev.cont[e11, :, PULSE_FEATURES.index("time")].tolist() == [5, 10, 20, 30, 40, 50]  # nothing trimmed
