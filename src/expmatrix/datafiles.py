"""The data files a matrix reads: generated once and checked once, before any job starts."""

from __future__ import annotations

from pathlib import Path

import h5py

from expmatrix.config import DataConfig, Job
from expmatrix.config.layout import SPLITS
from expmatrix.data import DataError, ensure_file, synthetic_path
from expmatrix.store import RunStore


def required_datasets(cfg: DataConfig) -> list[str]:
    """The datasets a job of this data section reads: its `data.keys`, or the pulse layout's per split (the counts,
    `n_pulses` or `offsets`, are checked by the reader, which knows the layout)."""
    if cfg.source == "fourtops":
        return list(cfg.keys.model_dump().values())
    return [f"{name}_{split}" for name in ("pulses", "direction") for split in SPLITS]


def _check_file(path: Path, names: list[str]) -> None:
    if not path.is_file():
        raise DataError(f"{path}: data file not found" + (" (a folder)" if path.exists() else ""))
    if not h5py.is_hdf5(path):
        with open(path, "rb") as f:
            raise DataError(f"{path}: not an HDF5 file (first bytes {f.read(16)!r})")
    try:
        with h5py.File(path, "r") as f:
            found, missing = sorted(f.keys()), [n for n in names if n not in f]
    except OSError as e:  # the signature is there, the rest is not (a cut copy)
        raise DataError(f"{path}: an HDF5 file that cannot be opened ({e})") from None
    if missing:
        what = "dataset" if len(missing) == 1 else "datasets"
        raise DataError(f"{path}: no {what} {', '.join(map(repr, missing))}; found: {', '.join(found) or 'nothing'}")


def check_data(jobs: list[Job], store: RunStore) -> None:
    """Open every data file the jobs read once, before any of them starts: one that is missing, not HDF5, or
    lacks a dataset a job names is a `DataError` with its path and what it holds (not N failed jobs).
    Synthetic data not generated yet is skipped: the generator writes what the reader expects."""
    needed: dict[Path, set[str]] = {}
    for job in jobs:
        cfg = job.config.data
        path = synthetic_path(store.paths.cache.dir, cfg) if job.data_path == "synthetic" else Path(job.data_path)
        if job.data_path != "synthetic" or path.exists():
            needed.setdefault(path, set()).update(required_datasets(cfg))
    for path, names in needed.items():
        _check_file(path, sorted(names))


def prepare_data(jobs: list[Job], store: RunStore) -> None:
    """Generate shared inputs once, before workers start (no two workers write one file), then check every
    data file (`check_data`)."""
    seen = set()
    for job in jobs:
        cfg = job.config.data
        key = (cfg.source, job.data_path, cfg.synthetic.model_dump_json())
        if key not in seen:
            seen.add(key)
            ensure_file(cfg, job.data_path, store.paths.cache.dir)
    check_data(jobs, store)


def check_data_file(cfg: DataConfig, data_path: str, store: RunStore) -> Path:
    """The file of one data section, generated if synthetic, and checked; its path."""
    path = ensure_file(cfg, data_path, store.paths.cache.dir)
    _check_file(path, required_datasets(cfg))
    return path
