"""One split of a pulse file (padded or ragged layout) as `Events`, read in chunks, with a pulse selection.

Both layouts go through the same path: chunks of events as (pulses one event after the other, counts), the
selection of `data.pulses` per event, then one padded table (N, P, F) whose P is the file's P (padded layout)
or the longest selected event (ragged layout). The same events therefore give the same `Events` from either
layout, and every tokenizer sees the same pulses.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from expmatrix.config import PulsesConfig
from expmatrix.config.layout import SPLITS
from expmatrix.data.events import Events
from expmatrix.data.fourtops import DataError, dataset, open_h5
from expmatrix.data.icecube import check_directions, checked_datasets, feature_names, padded_chunks
from expmatrix.data.icecube_ragged import GEOMETRY, checked_offsets, event_counts, is_ragged, ragged_chunks

CHUNK_EVENTS = 4096  # events read at once
SENSOR_COLUMNS = ("sensor_id", "x", "y", "z")  # what the hierarchical model groups and places pulses by
SELECT_COLUMNS = {"time": (), "nonaux_first": ("auxiliary",), "charge": ("charge",), "random": ()}
RANDOM_SEED = 20240  # `select: random` draws from (this, split, first event of the chunk): the same for every job


def selection_order(flat: np.ndarray, counts: np.ndarray, cols: dict[str, int], select: str, rng) -> np.ndarray:
    """(M,) rank of every pulse within its event under `select` (0 = chosen first); pulses are time-ordered."""
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
        keys = (rng.random(len(flat)), event)
    order = np.lexsort(keys)
    rank = np.empty(len(flat), np.int64)
    rank[order] = np.arange(len(flat)) - first[order]
    return rank


def select_pulses(flat, counts, cols: dict[str, int], pulses: PulsesConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    """At most `pulses.max` pulses of every event, chosen by `pulses.select`, kept in time order."""
    if pulses.max is None or counts.max(initial=0) <= pulses.max:
        return flat, counts
    keep = selection_order(flat, counts, cols, pulses.select, rng) < pulses.max
    return flat[keep], np.minimum(counts, pulses.max)


def pad(flat: np.ndarray, counts: np.ndarray, p: int) -> np.ndarray:
    """(M, K) pulses of len(counts) events -> (m, p, K), zeros after each event's pulses."""
    out = np.zeros((len(counts), p, flat.shape[1]), np.float32)
    out[np.arange(p)[None, :] < counts[:, None]] = flat
    return out


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
) -> Events:
    """One split as `Events`: pulses as objects (id 1, 0 = empty slot), the columns named in `features` (after the
    selection `pulses`), the direction as `target`, each event's length in the file as `length`, and with
    `sensors` the sensor_id, x, y, z of every pulse. ``fraction`` < 1 reads only the first rows (the file is
    already shuffled)."""
    path, pulses = Path(path), pulses or PulsesConfig()
    with open_h5(path) as f:
        ragged = is_ragged(f, split)
        ds = checked_offsets(f, path, split) if ragged else checked_datasets(f, path, split)  # shapes first
        ds = dataset(f, path, f"pulses_{split}")
        names = feature_names(ds, path)
        _columns(names, features, path, split, f"the tokenizer needs {list(features)}")
        needed = SELECT_COLUMNS[pulses.select] if pulses.max is not None else ()
        _columns(names, needed, path, split, f"data.pulses.select {pulses.select} needs them")
        if sensors:
            _columns(names, SENSOR_COLUMNS, path, split, "model.kind hierarchical groups pulses by sensor")
        wanted = list(dict.fromkeys((*features, *needed, *(SENSOR_COLUMNS if sensors else ()))))
        cols = {x: i for i, x in enumerate(wanted)}
        counts_all = event_counts(f, path, split)
        n = len(counts_all) if fraction >= 1 else max(1, int(round(len(counts_all) * fraction)))
        p_file = int(counts_all[:n].max()) if ragged else ds.shape[1]
        p = min(p_file, pulses.max) if pulses.max is not None else p_file
        cont = np.zeros((n, p, len(features)), np.float32)
        where = np.zeros((n, p, len(SENSOR_COLUMNS)), np.float32) if sensors else None
        length = np.zeros(n, np.int64)
        chunks = (ragged_chunks if ragged else padded_chunks)(f, path, split, [names.index(x) for x in wanted], n,
                                                              CHUNK_EVENTS)  # fmt: skip
        start = 0
        for flat, counts in chunks:
            rows = slice(start, start + len(counts))
            if sensors:
                check_sensors(f, path, split, flat[:, cols["sensor_id"]], counts, start)
            length[rows] = counts
            rng = np.random.default_rng([RANDOM_SEED, SPLITS.index(split), start])
            kept, kept_counts = select_pulses(flat, counts, cols, pulses, rng)
            table = pad(kept, kept_counts, p)
            cont[rows] = table[:, :, [cols[x] for x in features]]
            if where is not None:
                where[rows] = table[:, :, [cols[x] for x in SENSOR_COLUMNS]]
            start += len(counts)
        direction = dataset(f, path, f"direction_{split}")[:n].astype(np.float32)
    check_directions(path, split, direction)
    real = np.arange(p)[None, :] < np.minimum(length, p)[:, None]
    zeros = np.zeros(n, dtype=np.int64)
    return Events(real.astype(np.int64), cont, None, zeros, zeros, tuple(features), direction, where, length)
