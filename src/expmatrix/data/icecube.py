"""Reader of the `icecube` pulse layout: one muon-like event per row, its pulses, its true direction.

On-disk layout (HDF5; one set of datasets per split ``train``, ``val``, ``test``):

| dataset             | shape       | dtype   | content                                                    |
|---------------------|-------------|---------|------------------------------------------------------------|
| ``pulses_<split>``  | [N, P, F]   | float32 | per event up to P pulses, time-ordered; rows >= n are 0     |
| ``n_pulses_<split>``| [N]         | integer | real pulses of the event, 1..P                             |
| ``direction_<split>``| [N, 3]     | float32 | unit vector the particle comes from (IceCube convention)   |
| ``zenith_<split>``, ``azimuth_<split>`` | [N] | float32 | the same direction in radians (written, not read) |

``pulses_<split>`` carries an attribute ``features``: the names of its F columns. The embedded
generator writes ``time`` [ns, ~1e4 offset], ``charge`` [p.e.], ``x``, ``y``, ``z`` [m],
``sensor_id`` (string * 60 + dom, 0..5159) and ``auxiliary`` (0/1). A real file may hold any
column order or extra columns: the reader takes the columns the job's tokenizer declares, by name.
Direction: ``(sin zen cos az, sin zen sin az, cos zen)``; the particle travels along minus it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np

from expmatrix.config.layout import SPLITS
from expmatrix.data.fourtops import DataError, dataset

PULSE_FEATURES = ("time", "charge", "x", "y", "z", "sensor_id", "auxiliary")  # the generator's column order
UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed for a stored direction


def zenith_azimuth(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) vectors (any norm) -> zenith (N,) in [0, pi], azimuth (N,) in [0, 2 pi)."""
    zenith = np.arctan2(np.hypot(v[:, 0], v[:, 1]), v[:, 2])
    return zenith, np.mod(np.arctan2(v[:, 1], v[:, 0]), 2 * np.pi)


def feature_names(ds: h5py.Dataset, path: Path) -> list[str]:
    """The `features` attribute of a pulse dataset (a JSON list or an array of names)."""
    if "features" not in ds.attrs:
        raise DataError(f"{path}: dataset {ds.name.lstrip('/')!r} has no `features` attribute naming its columns")
    raw = ds.attrs["features"]
    raw = raw.decode() if isinstance(raw, bytes) else raw  # a JSON string stored as bytes
    names = json.loads(raw) if isinstance(raw, str) else [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    if len(names) != ds.shape[-1]:
        raise DataError(f"{path}: dataset {ds.name.lstrip('/')!r} has {ds.shape[-1]} columns but names {names}")
    return names


def checked_datasets(f: h5py.File, path: Path, split: str) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
    pulses, n, direction = (dataset(f, path, f"{k}_{split}") for k in ("pulses", "n_pulses", "direction"))
    if pulses.ndim != 3:
        raise DataError(f"{path}: dataset 'pulses_{split}' has shape {pulses.shape}; expected (N, P, F)")
    if n.shape != pulses.shape[:1]:
        raise DataError(f"{path}: dataset 'n_pulses_{split}' has shape {n.shape}; expected ({len(pulses)},)")
    if direction.shape != (len(pulses), 3):
        raise DataError(f"{path}: dataset 'direction_{split}' has shape {direction.shape}; expected ({len(pulses)}, 3)")
    return pulses, n, direction


def padded_chunks(f: h5py.File, path: Path, split: str, columns: list[int], n: int, chunk: int, first: int = 0):
    """Events `first` .. `n` - 1 of the padded layout in chunks: (pulses (M, len(columns)) of the real rows, one
    event after the other, counts (m,)). Counts outside 1..P, NaN/inf pulses and bad directions are `DataError`s."""
    pulses, n_ds, _ = checked_datasets(f, path, split)
    p = pulses.shape[1]
    for start in range(first, n, chunk):
        raw = pulses[start : min(n, start + chunk)].astype(np.float32, copy=False)[:, :, columns]
        counts = n_ds[start : start + len(raw)].astype(np.int64)
        check_counts(path, split, counts, p, start)
        flat = raw[np.arange(p)[None, :] < counts[:, None]]
        check_finite(path, f"pulses_{split}", flat, counts, start)
        yield flat, counts


def check_counts(path: Path, split: str, n_pulses: np.ndarray, p: int, first: int = 0) -> None:
    bad = np.flatnonzero((n_pulses < 1) | (n_pulses > p))
    if len(bad):
        raise DataError(
            f"{path}: dataset 'n_pulses_{split}' holds {n_pulses[bad[0]]} at event {first + bad[0]}; "
            f"expected 1..{p} ({len(bad)} such events)"
        )


def check_finite(path: Path, name: str, flat: np.ndarray, counts: np.ndarray, first: int = 0) -> None:
    """NaN/inf in the pulses of a chunk: a `DataError` naming the dataset and the first such event."""
    bad_rows = ~np.isfinite(flat).all(axis=1)
    if bad_rows.any():
        event = np.repeat(np.arange(len(counts)), counts)[bad_rows]
        raise DataError(
            f"{path}: dataset {name!r} has NaN/inf in {len(np.unique(event))} events, first event {first + event[0]}"
        )


def check_directions(path: Path, split: str, direction: np.ndarray) -> None:
    """Finite unit vectors; an error names the dataset and the first bad event."""
    norm = np.linalg.norm(direction, axis=1)
    bad = np.flatnonzero(~np.isfinite(norm) | (np.abs(norm - 1) > UNIT_TOLERANCE))
    if len(bad):
        raise DataError(
            f"{path}: dataset 'direction_{split}' holds {len(bad)} vectors that are not finite unit vectors, "
            f"first event {bad[0]}: {direction[bad[0]].tolist()}"
        )


class AtomicH5:
    """An HDF5 file written under a temporary name that replaces `path` on a clean exit (nothing half-written)."""

    def __init__(self, path: str | Path, attrs: dict | None = None):
        self.path, self.attrs = Path(path), attrs or {}
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{np.random.default_rng().integers(1 << 30)}")

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.tmp, "w")
        try:
            self._create()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _create(self) -> None:
        """Create the empty datasets."""

    def extend(self, name: str, values: np.ndarray) -> None:
        """Append `values` along the first axis of dataset `name`."""
        ds = self.f[name]
        start = len(ds)
        ds.resize(start + len(values), axis=0)
        ds[start:] = values

    def append_directions(self, split: str, direction: np.ndarray) -> None:
        zenith, azimuth = zenith_azimuth(direction.astype(np.float64))
        for name, values in {"direction": direction, "zenith": zenith, "azimuth": azimuth}.items():
            self.extend(f"{name}_{split}", values)

    def create_directions(self, split: str) -> None:
        self.f.create_dataset(f"direction_{split}", (0, 3), np.float32, maxshape=(None, 3), chunks=(65536, 3))
        for angle in ("zenith", "azimuth"):
            self.f.create_dataset(f"{angle}_{split}", (0,), np.float32, maxshape=(None,), chunks=(65536,))

    def __exit__(self, kind, error, tb) -> None:
        self.f.attrs.update(self.attrs)
        self.f.close()
        if kind is None:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)  # nothing half-written is left behind


class PulseWriter(AtomicH5):
    """Appends events to a file in the padded layout, split by split; the file appears (atomically) on a clean exit.

    ``with PulseWriter(path, max_pulses) as w: w.append("train", pulses, n_pulses, direction)`` with
    pulses (m, P, 7) in `PULSE_FEATURES` order, n_pulses (m,), direction (m, 3) unit vectors.
    """

    def __init__(self, path: str | Path, max_pulses: int, attrs: dict | None = None):
        if max_pulses < 1:
            raise DataError(f"{path}: max_pulses must be >= 1, got {max_pulses}")
        super().__init__(path, attrs)
        self.p = max_pulses

    def _create(self) -> None:
        f, p, k = self.f, self.p, len(PULSE_FEATURES)
        for split in SPLITS:
            shape = {"maxshape": (None, p, k), "chunks": (256, p, k), "compression": "gzip", "compression_opts": 1}
            ds = f.create_dataset(f"pulses_{split}", (0, p, k), np.float32, **shape)
            ds.attrs["features"] = json.dumps(list(PULSE_FEATURES))
            f.create_dataset(f"n_pulses_{split}", (0,), np.int32, maxshape=(None,), chunks=(65536,))
            self.create_directions(split)

    def append(self, split: str, pulses: np.ndarray, n_pulses: np.ndarray, direction: np.ndarray) -> None:
        self.extend(f"pulses_{split}", pulses)
        self.extend(f"n_pulses_{split}", n_pulses)
        self.append_directions(split, direction)
