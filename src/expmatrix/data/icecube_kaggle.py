"""`expmatrix data icecube-kaggle`: the public IceCube Kaggle data ("Neutrinos in Deep Ice") in the
`icecube` pulse layout (see `icecube.py`), so that real events run through `data.path`.

Input, as Kaggle ships it:

* ``train_meta.parquet``: ``batch_id``, ``event_id``, ``first_pulse_index``, ``last_pulse_index``
  (rows of the event in its batch file, inclusive), ``azimuth``, ``zenith`` (rad; the direction the
  neutrino came from, ``(cos az sin zen, sin az sin zen, cos zen)``: the convention of this layout).
* ``train/batch_<n>.parquet``: one row per pulse: ``event_id``, ``time`` [ns], ``sensor_id``,
  ``charge`` [p.e.], ``auxiliary`` (bool).
* ``sensor_geometry.csv``: ``sensor_id``, ``x``, ``y``, ``z`` [m] of the 5160 sensors.

Without ``max_pulses`` every pulse is kept and the file is written in the ragged layout
(`icecube_ragged.py`, with the sensor geometry); with it, the padded layout, and per event at most
``max_pulses`` pulses are kept: the non-auxiliary ones first (they made the trigger), then the auxiliary
ones, each by time; the kept pulses are written in time order and the events that lost pulses are counted.
Each event goes to train/val/test at random (``fractions``, seeded per batch: the same inputs give the same
file), and a batch's events are written in random order (readers take the first rows as a sample); batches
follow each other in the order given.
Batches are converted one at a time, in chunks of events, so memory stays bounded whatever the
number of batches.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from expmatrix.config.layout import SPLITS
from expmatrix.data.events import pad
from expmatrix.data.fourtops import DataError
from expmatrix.data.icecube import PULSE_FEATURES, PulseWriter
from expmatrix.data.icecube_ragged import RaggedWriter

META_COLUMNS = ("batch_id", "event_id", "first_pulse_index", "last_pulse_index", "azimuth", "zenith")
PULSE_COLUMNS = ("event_id", "time", "sensor_id", "charge", "auxiliary")
CHUNK_EVENTS = 20_000


def _read(path: Path, columns: tuple[str, ...], what: str, where: pl.Expr | None = None) -> pl.DataFrame:
    """The columns (and rows `where`) of a parquet or CSV file, scanned lazily: of Kaggle's 131M-event
    meta file only the row groups of the chosen batches are read. A missing file or column is a
    `DataError` naming it."""
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    frame = pl.scan_csv(path) if path.suffix == ".csv" else pl.scan_parquet(path)
    names = frame.collect_schema().names()
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: {what} has no columns {missing}; it holds {names}")
    frame = frame.select(columns)
    return (frame if where is None else frame.filter(where)).collect()


def read_geometry(path: Path) -> np.ndarray:
    """(n_sensors, 3) float32 x, y, z by sensor_id (which must be 0..n-1, each once)."""
    geo = _read(path, ("sensor_id", "x", "y", "z"), "sensor geometry").sort("sensor_id")
    ids = geo["sensor_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise DataError(f"{path}: sensor_id must run 0..{len(ids) - 1}, each once")
    return geo.select("x", "y", "z").to_numpy().astype(np.float32)


def batch_id(path: Path) -> int:
    match = re.fullmatch(r"batch_(\d+)\.parquet", path.name)
    if match is None:
        raise DataError(f"{path}: expected a Kaggle batch file named batch_<n>.parquet")
    return int(match.group(1))


def directions(azimuth: np.ndarray, zenith: np.ndarray) -> np.ndarray:
    """(N, 3) float32 unit vectors the particles came from."""
    sz = np.sin(zenith)
    return np.stack([np.cos(azimuth) * sz, np.sin(azimuth) * sz, np.cos(zenith)], axis=1).astype(np.float32)


def event_pulses(rows: dict[str, np.ndarray], counts: np.ndarray, geometry: np.ndarray, p: int | None):
    """(pulses (M, 7) in `PULSE_FEATURES` order, kept counts (m,)) of m events whose pulse columns `rows` hold
    `counts` rows each, one event after the other: at most `p` pulses per event (all with None), in time order."""
    event = np.repeat(np.arange(len(counts)), counts)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    time, aux = rows["time"].astype(np.float64), rows["auxiliary"].astype(bool)
    keep = np.arange(len(time))
    if p is not None:
        order = np.lexsort((time, aux, event))  # per event: non-auxiliary first, then by time
        keep = order[np.arange(len(order)) - start[event[order]] < p]
    keep = keep[np.lexsort((time[keep], event[keep]))]  # the kept pulses of each event in time order
    sensor = rows["sensor_id"][keep]
    if sensor.min() < 0 or sensor.max() >= len(geometry):
        raise DataError(f"sensor_id outside 0..{len(geometry) - 1} (the geometry's sensors)")
    columns = {"time": time[keep], "charge": rows["charge"][keep], "sensor_id": sensor, "auxiliary": aux[keep]}
    columns |= dict(zip("xyz", geometry[sensor].T, strict=True))
    kept = counts if p is None else np.minimum(counts, p)
    return np.stack([columns[name] for name in PULSE_FEATURES], axis=1).astype(np.float32), kept


def rows_match(row_event: np.ndarray, event: np.ndarray, first: np.ndarray, last: np.ndarray) -> bool:
    """Each event's first and last rows are its own, the rows just outside them are not, and no two
    events share a row (`first` sorted)."""
    n = len(row_event)
    if not ((first <= last).all() and first.min() >= 0 and last.max() < n and (first[1:] > last[:-1]).all()):
        return False
    own = (row_event[first] == event).all() and (row_event[last] == event).all()
    before, after = first > 0, last < n - 1
    return bool(own and (row_event[first[before] - 1] != event[before]).all()
                and (row_event[last[after] + 1] != event[after]).all())  # fmt: skip


def row_indices(first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows first[i] .. first[i] + counts[i] - 1 of every event, one event after the other."""
    before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(int(counts.sum())) + np.repeat(first - before, counts)


def convert_kaggle(
    meta: str | Path,
    geometry: str | Path,
    batches: list[str | Path],
    out: str | Path,
    max_pulses: int | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict:
    """Write the events of `batches` to `out` (ragged; padded with `max_pulses`); returns events per split and
    the events that lost pulses."""
    if len(fractions) != 3 or not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise DataError(f"fractions must be three shares of train, val, test summing to 1, got {list(fractions)}")
    if (max_pulses is not None and max_pulses < 1) or seed < 0:
        raise DataError(f"max_pulses must be >= 1 and seed >= 0, got {max_pulses} and {seed}")
    geo = read_geometry(Path(geometry))
    paths = [Path(b) for b in batches]
    ids = [batch_id(b) for b in paths]
    if len(set(ids)) != len(ids):
        raise DataError(f"batches {sorted(b for b in set(ids) if ids.count(b) > 1)} are given more than once")
    meta_df = _read(Path(meta), META_COLUMNS, "event meta file", pl.col("batch_id").is_in(ids))
    report = {"events": dict.fromkeys(SPLITS, 0), "truncated": 0, "max_pulses": max_pulses}
    attrs = {"source": "IceCube Kaggle", "batches": ids, "seed": seed, "max_pulses": max_pulses}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    writer = PulseWriter(out, max_pulses, attrs) if max_pulses else RaggedWriter(out, PULSE_FEATURES, attrs, geo)
    with writer:
        for path, b in zip(paths, ids, strict=True):
            events = meta_df.filter(pl.col("batch_id") == b).sort("first_pulse_index")
            if not len(events):
                raise DataError(f"{meta}: no events of batch {b} ({path.name})")
            frame = _read(path, PULSE_COLUMNS, "pulse batch")
            bad = [c for c in PULSE_COLUMNS if frame[c].null_count() or (frame[c].dtype.is_float() and
                                                                         not frame[c].is_finite().all())]  # fmt: skip
            if bad:
                raise DataError(f"{path}: columns {bad} hold nulls or NaN/inf")
            pulses = {c: frame[c].to_numpy() for c in PULSE_COLUMNS}
            first, last = events["first_pulse_index"].to_numpy(), events["last_pulse_index"].to_numpy()
            if not rows_match(pulses["event_id"], events["event_id"].to_numpy(), first, last):
                raise DataError(f"{path}: its rows do not match the pulse indices of batch {b} in {meta}")
            direction = directions(events["azimuth"].to_numpy(), events["zenith"].to_numpy())
            if not np.isfinite(direction).all():
                raise DataError(f"{meta}: batch {b} has events with NaN/inf azimuth or zenith")
            rng = np.random.default_rng([seed, b])
            split = np.searchsorted(np.cumsum(fractions)[:-1], rng.random(len(events)), side="right")
            order = rng.permutation(len(events))  # the events of a batch in random order: `max_events` reads a sample
            first, last, split, direction = first[order], last[order], split[order], direction[order]
            for s in tqdm(range(0, len(events), CHUNK_EVENTS), desc=f"batch {b}", leave=False):
                e = slice(s, s + CHUNK_EVENTS)
                counts = last[e] - first[e] + 1
                idx = row_indices(first[e], counts)
                flat, kept = event_pulses({c: v[idx] for c, v in pulses.items()}, counts, geo, max_pulses)
                report["truncated"] += int((kept < counts).sum())
                event = np.repeat(split[e], kept)
                for k, name in enumerate(SPLITS):
                    sel = split[e] == k
                    if sel.any():
                        part = flat[event == k] if max_pulses is None else pad(flat[event == k], kept[sel], max_pulses)
                        writer.append(name, part, kept[sel], direction[e][sel])
                        report["events"][name] += int(sel.sum())
    return report
