"""Data sources: the on-disk layouts a job can read, and the embedded generator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from expmatrix.config import DataConfig
from expmatrix.config.layout import SPLITS
from expmatrix.data.events import Events
from expmatrix.data.fourtops import DataError, dataset, open_h5, read_split
from expmatrix.data.icecube_long import write_long_events
from expmatrix.data.icecube_synthetic import write_icecube
from expmatrix.data.pulses import read_pulses
from expmatrix.data.pythia import write_pythia
from expmatrix.data.stream import StreamedSplit
from expmatrix.data.synthetic import write_fourtops

# (source, data.synthetic.generator) -> the writer of its events (path, events, seed); pythia: chunks in parallel,
# one process per CPU, resumable
WRITERS: dict[tuple[str, str], Callable[[Path, int, int], Path]] = {
    ("fourtops", "builtin"): write_fourtops,
    ("fourtops", "pythia"): write_pythia,
    ("icecube", "builtin"): write_icecube,
    ("icecube", "long"): write_long_events,
}


def synthetic_path(cache_dir: Path, cfg: DataConfig) -> Path:
    """The cached file of a generator's events: `<source>_synthetic_...` (built-in) or `fourtops_pythia_...`."""
    kind = "synthetic" if cfg.synthetic.generator == "builtin" else cfg.synthetic.generator
    return cache_dir / f"{cfg.source}_{kind}_e{cfg.synthetic.events}_s{cfg.synthetic.seed}.h5"


def ensure_file(cfg: DataConfig, data_path: str, cache_dir: Path) -> Path:
    """The file a job reads; `synthetic` is generated on first use and cached."""
    if data_path != "synthetic":
        return Path(data_path)
    path = synthetic_path(cache_dir, cfg)
    if not path.exists():
        WRITERS[cfg.source, cfg.synthetic.generator](path, cfg.synthetic.events, cfg.synthetic.seed)
    return path


def _generator_key(cfg: DataConfig) -> dict:
    """Events and seed of the generated file; the generator too unless it is the built-in one (keys of fits made
    before it existed stay). Read field by field: the read tracer sees them consumed."""
    out = {"events": cfg.synthetic.events, "seed": cfg.synthetic.seed}
    if cfg.synthetic.generator != "builtin":
        out["generator"] = cfg.synthetic.generator
    return out


def data_selection(cfg: DataConfig) -> dict:
    """What decides which events a job reads (besides the file itself): a cache key part."""
    if cfg.source != "fourtops":  # pulse sources: the features come from the tokenizer, nothing else selects
        out = {"source": cfg.source, "max_events": cfg.max_events}
        if cfg.path == "synthetic":
            out["synthetic"] = _generator_key(cfg)
        if cfg.pulses.max is not None:
            out["pulses"] = {"max": cfg.pulses.max, "select": cfg.pulses.select}
            if cfg.pulses.select == "random":  # drawn per (split, event, pulse) since fits cached before differ
                out["pulses"]["draw"] = "per-event"
        if cfg.stream is not None:  # the tokenizer is fitted on the first `fit_events` training events
            out["fit_events"] = cfg.stream.fit_events
        return out
    out = {
        "source": cfg.source,
        "keys": {k: getattr(cfg.keys, k) for k in type(cfg.keys).model_fields},
        "task": {"signal": cfg.task.signal, "background": cfg.task.background},
        "max_events": cfg.max_events,
        "unit": cfg.unit,
    }
    if cfg.order != "input":  # (at its default it stays out: existing fits keep their keys)
        out["order"] = cfg.order
    if cfg.path == "synthetic":
        out["synthetic"] = _generator_key(cfg)
    return out


def stream_block(cfg: DataConfig) -> int | None:
    """Events per block of a job that streams its splits (`data.stream`); None: the splits are read into memory."""
    return None if cfg.stream is None else cfg.stream.block_events


def file_identity(data_path: str) -> list:
    """(path, size, mtime): a file replaced in place gets a new identity."""
    if data_path == "synthetic":
        return ["synthetic"]
    st = Path(data_path).stat()
    return [str(Path(data_path).resolve()), st.st_size, st.st_mtime_ns]


def _fraction(path: Path, train_key: str | None, max_events: int | None) -> float:
    """The share of every split to read so that the training split has at most `max_events` events
    (`train_key` None: a pulse file of either layout)."""
    if max_events is None:
        return 1.0
    with open_h5(path) as f:
        n = len(dataset(f, path, "direction_train")) if train_key is None else len(dataset(f, path, train_key))
        return min(1.0, max_events / n)


def load_pulse_splits(
    cfg: DataConfig,
    data_path: str,
    cache_dir: Path,
    features: tuple[str, ...],
    sensors: bool = False,
    ragged: bool | None = None,
) -> dict[str, Events | StreamedSplit]:
    """train/val/test `Events` of a pulse file with the columns `features` after the job's pulse selection, the
    direction as target, and with `sensors` every pulse's sensor and its position. Held ragged with `sensors`
    (the hierarchical model), padded with `ragged` False, else ragged where a ragged file's events are not
    bounded by `data.pulses.max`; with `data.stream`, `StreamedSplit`s that read them block by block."""
    path = ensure_file(cfg, data_path, cache_dir)
    fraction = _fraction(path, None, cfg.max_events)
    ragged = True if sensors else ragged
    if (block_events := stream_block(cfg)) is not None:
        return {split: StreamedSplit(path, split, features, fraction, cfg.pulses, sensors, block_events, ragged)
                for split in SPLITS}  # fmt: skip
    return {split: read_pulses(path, split, features, fraction, cfg.pulses, sensors, ragged) for split in SPLITS}


def load_splits(cfg: DataConfig, data_path: str, cache_dir: Path) -> dict[str, Events]:
    """train/val/test `Events` with the job's task and feature selection (fourtops)."""
    path = ensure_file(cfg, data_path, cache_dir)
    keys = cfg.keys.model_dump()
    fraction = _fraction(path, keys["x_train"], cfg.max_events)
    splits = {
        split: read_split(
            path,
            keys[f"x_{split}"],
            keys[f"y_{split}"],
            signal=cfg.task.signal,
            background=cfg.task.background,
            use_met=cfg.use_met,
            cont_features=cfg.cont_features,
            fraction=fraction,
            unit=cfg.unit,
            order=cfg.order,
            split=SPLITS.index(split),
        )
        for split in SPLITS
    }
    for split, events in splits.items():
        if len(set(events.label.tolist())) < 2:
            raise DataError(f"{path}: split {split!r} has no events of one class of the task {cfg.task.model_dump()}")
    return splits


__all__ = [
    "WRITERS",
    "DataError",
    "Events",
    "StreamedSplit",
    "data_selection",
    "ensure_file",
    "file_identity",
    "load_pulse_splits",
    "load_splits",
    "stream_block",
    "synthetic_path",
]
