"""One split of a pulse file (padded or ragged layout) as `Events`, read in chunks, with a pulse selection.

Both layouts go through the same path: chunks of events as (pulses one event after the other, counts), the
selection of `data.pulses` per event, then one padded table (N, P, F) whose P is the file's P (padded layout)
or the longest selected event (ragged layout), or, with `ragged`, the selected pulses as they are, one slot each
(`Events.offsets`; what the hierarchical model reads). The same events therefore give the same `Events` from
either layout, and every tokenizer sees the same pulses.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from expmatrix.config import PulsesConfig
from expmatrix.config.layout import SPLITS
from expmatrix.data.events import Events, pad
from expmatrix.data.fourtops import DataError, dataset, open_h5
from expmatrix.data.icecube import check_directions, checked_datasets, feature_names, padded_chunks
from expmatrix.data.icecube_ragged import GEOMETRY, checked_offsets, is_ragged, ragged_chunks

CHUNK_EVENTS = 4096  # events read at once
SENSOR_COLUMNS = ("sensor_id", "x", "y", "z")  # what the hierarchical model groups and places pulses by
SELECT_COLUMNS = {"time": (), "nonaux_first": ("auxiliary",), "charge": ("charge",), "random": ()}
RANDOM_SEED = 20240  # `select: random` draws from (this, split, event, pulse): the same for every job and reading


def pulse_uniforms(split: int, event: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(M,) uniforms in [0, 1), a pure function of (`RANDOM_SEED`, split, event, position in the event): the same
    whatever chunks or blocks the file is read in (splitmix64 of the packed key)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(RANDOM_SEED) << np.uint64(40)) + (np.uint64(split) << np.uint64(36))
        x = x + (event.astype(np.uint64) << np.uint64(20)) * np.uint64(0x9E3779B97F4A7C15) + position.astype(np.uint64)
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def selection_order(
    flat: np.ndarray, counts: np.ndarray, cols: dict[str, int], select: str, split: int = 0, event0: int = 0
) -> np.ndarray:
    """(M,) rank of every pulse within its event under `select` (0 = chosen first); pulses are time-ordered.
    `split`, `event0` (the chunk's first event in the split): what `random` draws from."""
    event = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    position = np.arange(len(flat)) - first
    if select == "time":
        return position
    if select == "nonaux_first":
        keys = (position, flat[:, cols["auxiliary"]] > 0.5, event)
    elif select == "charge":
        keys = (position, -flat[:, cols["charge"]], event)
    else:
        keys = (pulse_uniforms(split, event0 + event, position), event)
    order = np.lexsort(keys)
    rank = np.empty(len(flat), np.int64)
    rank[order] = np.arange(len(flat)) - first[order]
    return rank


def select_pulses(
    flat, counts, cols: dict[str, int], pulses: PulsesConfig, split: int = 0, event0: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """At most `pulses.max` pulses of every event, chosen by `pulses.select`, kept in time order (`event0`: the
    first event's index in the split)."""
    if pulses.max is None or counts.max(initial=0) <= pulses.max:
        return flat, counts
    keep = selection_order(flat, counts, cols, pulses.select, split, event0) < pulses.max
    return flat[keep], np.minimum(counts, pulses.max)


def _columns(names: list[str], wanted: tuple[str, ...], path: Path, split: str, why: str) -> list[int]:
    missing = [x for x in wanted if x not in names]
    if missing:
        raise DataError(f"{path}: dataset 'pulses_{split}' has no columns {missing} ({why}); it holds {names}")
    return [names.index(x) for x in wanted]


def check_sensors(f: h5py.File, path: Path, split: str, sensor: np.ndarray, counts: np.ndarray, first: int) -> None:
    """Sensor ids are non-negative integers, within the file's geometry table where it has one."""
    n_sensors = len(f[GEOMETRY]) if GEOMETRY in f else None
    bad = (sensor < 0) | (sensor != np.round(sensor))
    if n_sensors is not None:
        bad |= sensor >= n_sensors
    if bad.any():
        event = first + np.repeat(np.arange(len(counts)), counts)[bad][0]
        table = f"the geometry table (0..{n_sensors - 1}, dataset {GEOMETRY!r})" if n_sensors else "0, 1, ..."
        raise DataError(
            f"{path}: dataset 'pulses_{split}' event {event} holds sensor_id {sensor[bad][0]:g} outside {table}"
        )


def read_pulses(
    path: str | Path,
    split: str,
    features: tuple[str, ...],
    fraction: float = 1.0,
    pulses: PulsesConfig | None = None,
    sensors: bool = False,
    ragged: bool | None = False,
) -> Events:
    """One split as `Events` (`PulseReader`): every event of it, or with ``fraction`` < 1 the first rows (the file
    is already shuffled). `ragged`: the events as read, not padded (`Events.offsets`): memory holds the pulses
    themselves whatever the longest event, where the padded table holds events x longest event (None: where
    the file stores them ragged and no `pulses.max` bounds them)."""
    return PulseReader(Path(path), split, features, fraction, pulses, sensors).read(ragged=ragged)


class PulseReader:
    """One split of a pulse file, checked once; `read` gives events of it as `Events`: pulses as objects
    (id 1, 0 = empty slot), the columns named in `features` (after the selection `pulses`), the direction as
    `target`, each event's length in the file as `length`, and with `sensors` the sensor_id, x, y, z of every
    pulse. `fraction` < 1: only the first rows. Padded events are as wide as the longest selected event of
    all the rows read (the file's P in the padded layout), whichever of them one `read` returns."""

    def __init__(self, path: Path, split: str, features: tuple[str, ...], fraction: float = 1.0,
                 pulses: PulsesConfig | None = None, sensors: bool = False):  # fmt: skip
        self.path, self.split, self.features = path, split, tuple(features)
        self.pulses, self.sensors = pulses or PulsesConfig(), sensors
        with open_h5(path) as f:  # open while checking and while reading: no handle is left open between reads
            self._check(f, fraction)

    def _check(self, f: h5py.File, fraction: float) -> None:
        path, split, features = self.path, self.split, self.features
        ragged = is_ragged(f, split)
        self.offsets = checked_offsets(f, path, split) if ragged else None  # shapes first
        pulses, sensors = self.pulses, self.sensors
        ds = dataset(f, path, f"pulses_{split}") if ragged else checked_datasets(f, path, split)[0]
        names = feature_names(ds, path)
        _columns(names, features, path, split, f"the tokenizer needs {list(features)}")
        needed = SELECT_COLUMNS[pulses.select] if pulses.max is not None else ()
        _columns(names, needed, path, split, f"data.pulses.select {pulses.select} needs them")
        if sensors:
            _columns(names, SENSOR_COLUMNS, path, split, "model.kind hierarchical groups pulses by sensor")
        wanted = list(dict.fromkeys((*features, *needed, *(SENSOR_COLUMNS if sensors else ()))))
        self.cols, self.columns = {x: i for i, x in enumerate(wanted)}, [names.index(x) for x in wanted]
        counts = np.diff(self.offsets) if ragged else dataset(f, path, f"n_pulses_{split}")[:].astype(np.int64)
        n = len(counts) if fraction >= 1 else max(1, int(round(len(counts) * fraction)))
        self.length = counts[:n]  # pulses per event in the file (the padded layout's counts are checked per chunk)
        p_file = int(self.length.max()) if ragged else ds.shape[1]
        self.p = min(p_file, pulses.max) if pulses.max is not None else p_file
        self.direction = dataset(f, path, f"direction_{split}")[:n].astype(np.float32)
        check_directions(path, split, self.direction)

    def __len__(self) -> int:
        return len(self.length)

    def holds_ragged(self, ragged: bool | None) -> bool:
        """`ragged`, where None means: as read where the file stores events ragged and `pulses.max` does not
        bound them."""
        return self.offsets is not None and self.pulses.max is None if ragged is None else ragged

    def read(self, first: int = 0, stop: int | None = None, ragged: bool | None = False) -> Events:
        """Events `first` .. `stop` - 1 (default: all), padded to `p` slots or as read (`holds_ragged`)."""
        stop = len(self) if stop is None else stop
        sensor_columns = [self.cols[x] for x in SENSOR_COLUMNS] if self.sensors else None
        width = None if self.holds_ragged(ragged) else self.p
        table = Table(stop - first, width, [self.cols[x] for x in self.features], sensor_columns)
        with open_h5(self.path) as f:
            if self.offsets is not None:
                chunks = ragged_chunks(f, self.path, self.split, self.columns, stop, CHUNK_EVENTS, first, self.offsets)
            else:
                chunks = padded_chunks(f, self.path, self.split, self.columns, stop, CHUNK_EVENTS, first)
            for flat, counts in chunks:
                at = first + table.start
                if self.sensors:
                    check_sensors(f, self.path, self.split, flat[:, self.cols["sensor_id"]], counts, at)
                table.add(*select_pulses(flat, counts, self.cols, self.pulses, SPLITS.index(self.split), at), counts)
        return table.events(self.features, self.direction[first:stop])


class Table:
    """The selected pulses of `n` events, chunk after chunk: padded to `p` slots, or ragged (`p` None: kept as
    read). `features`, `sensors`: the columns of the read pulses that become `cont` and `sensors`."""

    def __init__(self, n: int, p: int | None, features: list[int], sensors: list[int] | None):
        self.columns, self.sensor_columns, self.p = features, sensors, p
        self.length, self.parts, self.start = np.zeros(n, np.int64), [], 0
        if p is not None:
            self.cont = np.zeros((n, p, len(features)), np.float32)
            self.where = np.zeros((n, p, len(sensors)), np.float32) if sensors else None

    def add(self, flat: np.ndarray, kept_counts: np.ndarray, counts: np.ndarray) -> None:
        """One chunk: `flat` (M, K) selected pulses, `kept_counts` of them per event, `counts` in the file."""
        rows = slice(self.start, self.start + len(counts))
        self.length[rows], self.start = counts, self.start + len(counts)
        if self.p is None:
            self.parts.append((flat, kept_counts))
            return
        table = pad(flat, kept_counts, self.p)
        self.cont[rows] = table[:, :, self.columns]
        if self.where is not None:
            self.where[rows] = table[:, :, self.sensor_columns]

    def events(self, features: tuple[str, ...], direction: np.ndarray) -> Events:
        zeros = np.zeros(len(self.length), dtype=np.int64)
        if self.p is not None:
            real = np.arange(self.p)[None, :] < np.minimum(self.length, self.p)[:, None]
            return Events(real.astype(np.int64), self.cont, None, zeros, zeros, features, direction, self.where,
                          self.length)  # fmt: skip
        flat = np.concatenate([f for f, _ in self.parts])[:, None, :]  # (M, 1, K): every pulse one slot
        offsets = np.concatenate([[0], np.cumsum(np.concatenate([c for _, c in self.parts]))])
        where = flat[:, :, self.sensor_columns] if self.sensor_columns else None
        return Events(np.ones((len(flat), 1), np.int64), flat[:, :, self.columns], None, zeros, zeros, features,
                      direction, where, self.length, offsets)  # fmt: skip
