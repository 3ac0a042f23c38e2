"""The ragged `icecube` pulse layout: every pulse of every event of a split in one table, plus offsets (CSR).

Per split (``train``, ``val``, ``test``):

| dataset               | shape            | dtype   | content                                                  |
|-----------------------|------------------|---------|----------------------------------------------------------|
| ``pulses_<split>``    | [total, F]       | float32 | all pulses, event after event, each event time-ordered    |
| ``offsets_<split>``   | [N + 1]          | int64   | event i holds rows offsets[i] .. offsets[i + 1] - 1       |
| ``direction_<split>`` | [N, 3]           | float32 | as in the padded layout (``zenith``/``azimuth`` beside it) |

and, once per file, an optional ``geometry`` [S, 3] float32: x, y, z [m] of sensor_id 0..S-1.
``pulses_<split>`` names its columns in its ``features`` attribute, as in the padded layout. Offsets start
at 0, increase strictly (no empty event) and end at ``total``; anything else is a `DataError` naming the
file, the dataset and the first bad event. Events are read in chunks, so memory holds one chunk of the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from expmatrix.config.layout import SPLITS
from expmatrix.data.fourtops import DataError, dataset
from expmatrix.data.icecube import AtomicH5, check_finite

GEOMETRY = "geometry"


def is_ragged(f: h5py.File, split: str) -> bool:
    """Whether the file holds `split` in the ragged layout (offsets) rather than the padded one (counts)."""
    return f"offsets_{split}" in f


def checked_offsets(f: h5py.File, path: Path, split: str) -> np.ndarray:
    """The offsets of `split`, checked against its pulse table and its directions."""
    pulses, direction = dataset(f, path, f"pulses_{split}"), dataset(f, path, f"direction_{split}")
    offsets = dataset(f, path, f"offsets_{split}")[:].astype(np.int64)
    name = f"offsets_{split}"
    if pulses.ndim != 2:
        raise DataError(f"{path}: dataset 'pulses_{split}' has shape {pulses.shape}; expected (total, F)")
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0:
        raise DataError(f"{path}: dataset {name!r} must start at 0 and hold N + 1 >= 2 entries, got {offsets[:3]}")
    steps = np.diff(offsets)
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        what = "an empty event" if steps[bad[0]] == 0 else "offsets that decrease"
        raise DataError(
            f"{path}: dataset {name!r} has {what} at event {bad[0]} "
            f"(offsets {offsets[bad[0]]} -> {offsets[bad[0] + 1]}); offsets must increase strictly"
        )
    if offsets[-1] != len(pulses):
        past = np.flatnonzero(offsets[1:] > len(pulses))
        where = f"; event {past[0]} ends past it" if len(past) else ""
        raise DataError(
            f"{path}: dataset {name!r} ends at {offsets[-1]} but 'pulses_{split}' holds {len(pulses)} rows{where}"
        )
    if direction.shape != (len(offsets) - 1, 3):
        raise DataError(
            f"{path}: dataset 'direction_{split}' has shape {direction.shape}; expected ({len(offsets) - 1}, 3)"
        )
    return offsets


def ragged_chunks(f: h5py.File, path: Path, split: str, columns: list[int], n: int, chunk: int, first: int = 0,
                  offsets: np.ndarray | None = None):  # fmt: skip
    """Events `first` .. `n` - 1 in chunks of `chunk` events: (pulses (M, len(columns)), counts (m,)).
    `offsets`: the split's, already checked."""
    offsets = checked_offsets(f, path, split) if offsets is None else offsets
    pulses = f[f"pulses_{split}"]
    for start in range(first, n, chunk):
        stop = min(n, start + chunk)
        counts = np.diff(offsets[start : stop + 1])
        flat = pulses[offsets[start] : offsets[stop]].astype(np.float32, copy=False)[:, columns]
        check_finite(path, f"pulses_{split}", flat, counts, start)
        yield flat, counts


class RaggedWriter(AtomicH5):
    """Appends events to a file in the ragged layout; the file appears (atomically) on a clean exit.

    ``with RaggedWriter(path, features) as w: w.append("train", pulses, counts, direction)`` with pulses
    (M, F) of m events one after the other (each time-ordered), counts (m,) >= 1, direction (m, 3).
    """

    def __init__(self, path: str | Path, features: tuple[str, ...], attrs: dict | None = None, geometry=None):
        super().__init__(path, attrs)
        self.features, self.geometry = tuple(features), geometry

    def _create(self) -> None:
        k = len(self.features)
        for split in SPLITS:
            opts = {"chunks": (65536, k), "compression": "gzip", "compression_opts": 1}
            ds = self.f.create_dataset(f"pulses_{split}", (0, k), np.float32, maxshape=(None, k), **opts)
            ds.attrs["features"] = json.dumps(list(self.features))
            self.f.create_dataset(f"offsets_{split}", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(65536,))
            self.create_directions(split)
        if self.geometry is not None:
            self.f.create_dataset(GEOMETRY, data=np.asarray(self.geometry, np.float32))

    def append(self, split: str, pulses: np.ndarray, counts: np.ndarray, direction: np.ndarray) -> None:
        counts = np.asarray(counts, np.int64)
        if (counts < 1).any() or counts.sum() != len(pulses) or len(counts) != len(direction):
            raise DataError(
                f"{self.path}: {len(counts)} events of {counts.sum()} pulses (min {counts.min(initial=0)}) "
                f"and {len(direction)} directions do not match {len(pulses)} pulse rows"
            )
        end = int(self.f[f"offsets_{split}"][-1])
        self.extend(f"pulses_{split}", pulses)
        self.extend(f"offsets_{split}", end + np.cumsum(counts))
        self.append_directions(split, direction)
