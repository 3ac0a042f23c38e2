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
from expmatrix.data.events import Events
from expmatrix.data.fourtops import DataError, dataset, open_h5

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


def _checked_datasets(f: h5py.File, path: Path, split: str) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
    pulses, n, direction = (dataset(f, path, f"{k}_{split}") for k in ("pulses", "n_pulses", "direction"))
    if pulses.ndim != 3:
        raise DataError(f"{path}: dataset 'pulses_{split}' has shape {pulses.shape}; expected (N, P, F)")
    if n.shape != pulses.shape[:1]:
        raise DataError(f"{path}: dataset 'n_pulses_{split}' has shape {n.shape}; expected ({len(pulses)},)")
    if direction.shape != (len(pulses), 3):
        raise DataError(f"{path}: dataset 'direction_{split}' has shape {direction.shape}; expected ({len(pulses)}, 3)")
    return pulses, n, direction


def check_values(path: Path, split: str, cont: np.ndarray, n_pulses: np.ndarray, direction: np.ndarray, p: int):
    """Counts within 1..P, finite pulses in the real rows, finite unit directions; errors name the dataset."""
    bad = np.flatnonzero((n_pulses < 1) | (n_pulses > p))
    if len(bad):
        raise DataError(
            f"{path}: dataset 'n_pulses_{split}' holds {n_pulses[bad[0]]} at event {bad[0]}; "
            f"expected 1..{p} ({len(bad)} such events)"
        )
    real = np.arange(p)[None, :] < n_pulses[:, None]
    bad = np.flatnonzero((~np.isfinite(cont) & real[..., None]).any(axis=(1, 2)))
    if len(bad):
        raise DataError(f"{path}: dataset 'pulses_{split}' has NaN/inf in {len(bad)} events, first event {bad[0]}")
    norm = np.linalg.norm(direction, axis=1)
    bad = np.flatnonzero(~np.isfinite(norm) | (np.abs(norm - 1) > UNIT_TOLERANCE))
    if len(bad):
        raise DataError(
            f"{path}: dataset 'direction_{split}' holds {len(bad)} vectors that are not finite unit vectors, "
            f"first event {bad[0]}: {direction[bad[0]].tolist()}"
        )


def read_pulses(path: str | Path, split: str, features: tuple[str, ...], fraction: float = 1.0) -> Events:
    """One split as `Events`: pulses as objects (id 1, 0 = empty slot), the columns named in `features`,
    the direction as `target`. ``fraction`` < 1 reads only the first rows (the file is already shuffled)."""
    path = Path(path)
    with open_h5(path) as f:
        pulses, n_ds, dir_ds = _checked_datasets(f, path, split)
        names = feature_names(pulses, path)
        missing = [x for x in features if x not in names]
        if missing:
            raise DataError(
                f"{path}: dataset 'pulses_{split}' has no columns {missing} (the tokenizer needs {list(features)}); "
                f"it holds {names}"
            )
        n = len(n_ds) if fraction >= 1 else max(1, int(round(len(n_ds) * fraction)))
        raw = pulses[:n].astype(np.float32, copy=False)
        n_pulses, direction = n_ds[:n], dir_ds[:n].astype(np.float32)
    p = raw.shape[1]
    cont = raw[:, :, [names.index(x) for x in features]]
    check_values(path, split, cont, n_pulses, direction, p)
    real = np.arange(p)[None, :] < n_pulses[:, None]
    zeros = np.zeros(n, dtype=np.int64)
    return Events(
        ids=real.astype(np.int64),
        cont=np.where(real[..., None], cont, 0.0).astype(np.float32),
        globals_=None,
        label=zeros,
        process=zeros,
        feature_names=tuple(features),
        target=direction,
    )


class PulseWriter:
    """Appends events to a file in this layout, split by split; the file appears (atomically) on a clean exit.

    ``with PulseWriter(path, max_pulses) as w: w.append("train", pulses, n_pulses, direction)`` with
    pulses (m, P, 7) in `PULSE_FEATURES` order, n_pulses (m,), direction (m, 3) unit vectors.
    """

    def __init__(self, path: str | Path, max_pulses: int, attrs: dict | None = None):
        if max_pulses < 1:
            raise DataError(f"{path}: max_pulses must be >= 1, got {max_pulses}")
        self.path, self.p, self.attrs = Path(path), max_pulses, attrs or {}
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{np.random.default_rng().integers(1 << 30)}")

    def __enter__(self) -> PulseWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.tmp, "w")
        try:
            self._create()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def _create(self) -> None:
        f, p, k = self.f, self.p, len(PULSE_FEATURES)
        for split in SPLITS:
            shape = {"maxshape": (None, p, k), "chunks": (256, p, k), "compression": "gzip", "compression_opts": 1}
            ds = f.create_dataset(f"pulses_{split}", (0, p, k), np.float32, **shape)
            ds.attrs["features"] = json.dumps(list(PULSE_FEATURES))
            f.create_dataset(f"n_pulses_{split}", (0,), np.int32, maxshape=(None,), chunks=(65536,))
            f.create_dataset(f"direction_{split}", (0, 3), np.float32, maxshape=(None, 3), chunks=(65536, 3))
            for angle in ("zenith", "azimuth"):
                f.create_dataset(f"{angle}_{split}", (0,), np.float32, maxshape=(None,), chunks=(65536,))

    def append(self, split: str, pulses: np.ndarray, n_pulses: np.ndarray, direction: np.ndarray) -> None:
        zenith, azimuth = zenith_azimuth(direction.astype(np.float64))
        columns = {"pulses": pulses, "n_pulses": n_pulses, "direction": direction, "zenith": zenith,
                   "azimuth": azimuth}  # fmt: skip
        for name, values in columns.items():
            ds = self.f[f"{name}_{split}"]
            start = len(ds)
            ds.resize(start + len(values), axis=0)
            ds[start:] = values

    def __exit__(self, kind, error, tb) -> None:
        self.f.attrs.update(self.attrs)
        self.f.close()
        if kind is None:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)  # nothing half-written is left behind
