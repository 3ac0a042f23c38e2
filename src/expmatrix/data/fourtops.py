"""Reader of the `4tops_splitted.h5` layout (see `layout.py` and the README)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from expmatrix.config.layout import CONT_NAMES, N_COLUMNS, N_CONT, N_OBJECTS, PROCESSES
from expmatrix.data.events import Events

UNIT_TO_GEV = {"GeV": 1.0, "MeV": 1e-3, "TeV": 1e3}
ENERGY_FEATURES = (0, 1)  # E and pT carry units; eta and phi do not


class DataError(ValueError):
    """A data file that does not hold what the job expects."""


def open_h5(path: Path) -> h5py.File:
    """The data file, read-only; a missing one is a `DataError` naming it."""
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    return h5py.File(path, "r")


def dataset(f: h5py.File, path: Path, key: str) -> h5py.Dataset:
    if key not in f:
        raise DataError(f"{path}: dataset {key!r} not found; the file holds {sorted(f.keys())}")
    return f[key]


def _rows(ds: h5py.Dataset, fraction: float) -> np.ndarray:
    n = len(ds) if fraction >= 1 else max(1, int(round(len(ds) * fraction)))
    return ds[:n]


SHUFFLE_SEED = 20_240_601  # of `order: shuffled`: one permutation per event, the same in every job and run


def object_order(ids: np.ndarray, pt: np.ndarray, order: str, split: int = 0) -> np.ndarray | None:
    """(N, O) slot permutation per event: real objects first (pT-descending, or shuffled with a seed fixed
    per split and row: reading fewer rows keeps the others' order), empty slots last; None for `input`."""
    if order == "input":
        return None
    real = ids > 0
    if order == "pt":
        key = np.where(real, -pt.astype(np.float64), np.inf)
    else:
        key = np.where(real, np.random.default_rng([SHUFFLE_SEED, split]).random(ids.shape), np.inf)
    return np.argsort(key, axis=1, kind="stable")


def split_columns(x: np.ndarray, cont_features: list[int], use_met: bool, unit: str, order: str = "input",
                  split: int = 0):  # fmt: skip
    """Rows of the file layout -> ids (N, O) int64, selected features (N, O, F), globals (N, 2) or None; in GeV.
    `order` (input, pt, shuffled) sorts the objects of each event, see `object_order`."""
    ids = x[:, :N_OBJECTS].astype(np.int64)
    block = x[:, N_OBJECTS + 2 :].reshape(len(x), N_OBJECTS, N_CONT)
    perm = object_order(ids, block[:, :, CONT_NAMES.index("pT")], order, split)
    if perm is not None:
        ids = np.take_along_axis(ids, perm, axis=1)
        block = np.take_along_axis(block, perm[:, :, None], axis=1)
    cont = block[:, :, cont_features].copy()
    scale = UNIT_TO_GEV[unit]
    for pos, feature in enumerate(cont_features):
        if feature in ENERGY_FEATURES:
            cont[:, :, pos] *= scale
    globals_ = x[:, N_OBJECTS : N_OBJECTS + 2] * np.array([scale, 1.0], dtype=np.float32) if use_met else None
    return ids, cont, globals_


def read_split(
    path: str | Path,
    x_key: str,
    y_key: str,
    *,
    signal: list[int],
    background: list[int],
    use_met: bool,
    cont_features: list[int],
    fraction: float = 1.0,
    unit: str = "GeV",
    order: str = "input",
    split: int = 0,
) -> Events:
    """Read one split, keep the events of the task's processes, select features.

    ``fraction`` < 1 reads only the first rows (the file is already shuffled). ``order`` sorts each
    event's objects (``split`` seeds the shuffle).
    Binary task: label 1 for a process in ``signal``, 0 for one in ``background``;
    events of other processes are dropped.
    """
    path = Path(path)
    with open_h5(path) as f:
        x_ds, y_ds = dataset(f, path, x_key), dataset(f, path, y_key)
        if x_ds.ndim != 2 or x_ds.shape[1] != N_COLUMNS:
            raise DataError(
                f"{path}: dataset {x_key!r} has shape {x_ds.shape}; expected (N, {N_COLUMNS}) = "
                f"{N_OBJECTS} ids, MET, MET-phi, {N_OBJECTS} x (E, pT, eta, phi)"
            )
        if y_ds.shape != (x_ds.shape[0],):
            raise DataError(
                f"{path}: dataset {y_key!r} has shape {y_ds.shape}; expected ({x_ds.shape[0]},) like {x_key!r}"
            )
        x = _rows(x_ds, fraction).astype(np.float32, copy=False)
        y = _rows(y_ds, fraction)
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad_rows):
        raise DataError(f"{path}: dataset {x_key!r} has NaN/inf in {len(bad_rows)} rows, first row {bad_rows[0]}")
    process = y.astype(np.int64)
    unknown = np.setdiff1d(np.unique(process), list(PROCESSES))
    if len(unknown) or not np.array_equal(process, y):
        raise DataError(
            f"{path}: dataset {y_key!r} holds labels {np.unique(y)[:10]}; expected process ids {list(PROCESSES)}"
        )
    keep = np.isin(process, signal + background)
    x, process = x[keep], process[keep]

    ids, cont, globals_ = split_columns(x, cont_features, use_met, unit, order, split)
    return Events(
        ids=ids,
        cont=cont,
        globals_=globals_,
        label=np.isin(process, signal).astype(np.int64),
        process=process,
        feature_names=tuple(CONT_NAMES[i] for i in cont_features),
    )
