"""`expmatrix data explore`: distributions of a raw file, and the vocabulary a tokenizer would need.

Per feature (objects: real slots only; MET, MET-phi: every event): count, range, mean, median,
quantiles, and the fraction of invalid entries (NaN/inf; for energies and charges also <= 0,
which a log cannot take). Histograms are written as PNG (log counts for the energies and
charges). With a tokenizer preset, it is fitted on the rows read and its vocabulary (and, for
integer rules, the share of clipped entries) is reported.

The layout is found from the file: 4tops (``X_<split>``) or IceCube pulses (``pulses_<split>``,
see `icecube.py`). For pulses the real pulses are counted, the time after each event's first
pulse is added as a column (what `integer_icecube` codes), and the pulses per event are
summarized: the numbers the IceCube plan's phase 1 asks for before choosing vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
from tabulate import tabulate

from expmatrix.config.layout import CONT_NAMES, GLOBAL_NAMES, N_COLUMNS, OBJECT_TYPES
from expmatrix.data.events import Events
from expmatrix.data.fourtops import DataError, dataset, open_h5, split_columns
from expmatrix.data.icecube import feature_names
from expmatrix.data.pulses import read_pulses
from expmatrix.tokenizers import build_tokenizer

ENERGIES = ("E", "pT", "MET", "charge")  # positive: <= 0 is invalid (a log is taken); log-scale histograms
TIME_AFTER_FIRST = "time_after_first"
UNITS = {"E": " [GeV]", "pT": " [GeV]", "MET": " [GeV]", "charge": " [p.e.]", "time": " [ns]"}
UNITS[TIME_AFTER_FIRST] = UNITS["time"]
QUANTILES = (0.01, 0.16, 0.5, 0.84, 0.99)


@dataclass
class Exploration:
    rows: int
    stats: list[list] = field(default_factory=list)  # one row per feature
    types: list[list] = field(default_factory=list)  # object type, count, share
    type_headers: list[str] = field(default_factory=lambda: ["object type", "slots", "share"])
    vocab: list[list] = field(default_factory=list)  # tokenizer part, vocabulary, clipped share
    plots: list[Path] = field(default_factory=list)


def feature_stats(name: str, v: np.ndarray) -> list:
    invalid = ~np.isfinite(v)
    if name in ENERGIES:
        invalid |= np.isfinite(v) & (v <= 0)
    ok = v[~invalid]
    q = np.quantile(ok, QUANTILES) if len(ok) else [np.nan] * len(QUANTILES)
    rng = [ok.min(), ok.max(), ok.mean()] if len(ok) else [np.nan] * 3
    return [name, len(v), *rng, *q, invalid.mean() if len(v) else 0.0]


def _columns(x: np.ndarray, unit: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    ids, cont, globals_ = split_columns(x, list(range(len(CONT_NAMES))), True, unit)
    real = ids > 0
    cols = {f: cont[:, :, i][real] for i, f in enumerate(CONT_NAMES)}
    cols.update({f: globals_[:, i] for i, f in enumerate(GLOBAL_NAMES)})
    return cols, ids


def _histograms(cols: dict[str, np.ndarray], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, v in cols.items():
        v = v[np.isfinite(v)]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(v, bins=100)
        if name in (*ENERGIES, TIME_AFTER_FIRST):
            ax.set_yscale("log")  # the energy spectra fall over orders of magnitude
        ax.set(xlabel=name + UNITS.get(name, ""), ylabel="entries")
        fig.tight_layout()
        paths.append(folder / f"{name}.png")
        fig.savefig(paths[-1], dpi=80)
        plt.close(fig)
    return paths


def _vocabulary(config, x: np.ndarray, y: np.ndarray, cont_features: list[int], unit: str) -> list[list]:
    """The tokenizer fitted on the rows without NaN/inf: its vocabulary, and the share clipped per feature."""
    keep = np.isfinite(x).all(axis=1)
    x, y = x[keep], y[keep]
    ids, cont, globals_ = split_columns(x, cont_features, True, unit)
    names = tuple(CONT_NAMES[i] for i in cont_features)
    label = (y == 1).astype(np.int64)
    events = Events(ids, cont, globals_, label, y.astype(np.int64), names)
    return _fitted_vocabulary(config, events, use_met=True)


def _fitted_vocabulary(config, events: Events, use_met: bool) -> list[list]:
    tok = build_tokenizer(config, events.feature_names, use_met=use_met)
    tok.fit(events)
    tok.transform(events)
    real = int(events.real.sum())
    clipped = {f: n / (len(events) if f in GLOBAL_NAMES else max(real, 1)) for f, n in tok.out_of_range.items()}
    if config.kind == "binned":
        return [["joint token (+ MET, MET-phi, padding)", tok.vocab_size, ""]]
    if config.kind == "direct":
        return [["continuous: no vocabulary", "", ""]]
    return [[p, v, f"{clipped[p]:.4%}" if p in clipped else ""] for p, v in tok.vocabularies().items()]


def explore(
    path: str | Path,
    x_key: str = "X_train",
    y_key: str = "Y_train",
    *,
    unit: str = "GeV",
    max_events: int | None = 100_000,
    plots: str | Path | None = None,
    tokenizer=None,
    cont_features: list[int] = (1, 2, 3),
    split: str = "train",
) -> Exploration:
    """Statistics of the first `max_events` rows of one split (the file is shuffled), optional plots and vocabulary."""
    path = Path(path)
    with open_h5(path) as f:
        pulses = f"pulses_{split}" in f
    if pulses:
        return explore_pulses(path, split, max_events=max_events, plots=plots, tokenizer=tokenizer)
    with h5py.File(path, "r") as f:
        ds = dataset(f, path, x_key)
        if ds.ndim != 2 or ds.shape[1] != N_COLUMNS:
            raise DataError(f"{path}: dataset {x_key!r} has shape {ds.shape}; expected (N, {N_COLUMNS})")
        x = ds[: max_events or len(ds)].astype(np.float32)
        y = dataset(f, path, y_key)[: len(x)]
    cols, ids = _columns(x, unit)
    result = Exploration(rows=len(x), stats=[feature_stats(name, v) for name, v in cols.items()])
    counts = np.bincount(ids.ravel(), minlength=len(OBJECT_TYPES))
    result.types = [[OBJECT_TYPES[t], int(counts[t]), counts[t] / ids.size] for t in OBJECT_TYPES]
    result.types.append(["objects per event (mean)", float((ids > 0).sum(1).mean()), ""])
    if plots is not None:
        result.plots = _histograms(cols, Path(plots))
    if tokenizer is not None:
        result.vocab = _vocabulary(tokenizer, x, y, list(cont_features), unit)
    return result


def explore_pulses(
    path: Path, split: str = "train", *, max_events: int | None = 100_000, plots=None, tokenizer=None
) -> Exploration:
    """`explore` for the IceCube pulse layout: statistics over real pulses, pulses per event, vocabulary."""
    with open_h5(path) as f:
        names = feature_names(dataset(f, path, f"pulses_{split}"), path)
        n_events = len(dataset(f, path, f"direction_{split}"))  # either layout
    if not n_events:
        raise DataError(f"{path}: split {split} holds no events")
    fraction = 1.0 if not max_events else min(1.0, max_events / n_events)
    events = read_pulses(path, split, tuple(names), fraction)
    real = events.real
    cols = {f: events.cont[:, :, i][real] for i, f in enumerate(names)}
    if "time" in names:  # per event, the time after its first pulse
        time = np.where(real, events.cont[:, :, names.index("time")], np.inf)
        cols[TIME_AFTER_FIRST] = (time - time.min(axis=1, keepdims=True))[real]
    result = Exploration(rows=len(events), stats=[feature_stats(name, v) for name, v in cols.items()])
    per_event = real.sum(axis=1)
    capped = per_event == real.shape[1]
    result.types = [
        ["pulses per event (mean)", float(per_event.mean()), ""],
        ["pulses per event (median, max)", f"{np.median(per_event):g}, {per_event.max()}", ""],
        ["events at the cap of the layout", int(capped.sum()), capped.mean()],
    ]
    result.type_headers = ["pulses", "count", "share"]
    if plots is not None:
        result.plots = _histograms(cols, Path(plots))
    if tokenizer is not None:
        declared = tokenizer.declared_features()
        missing = [f for f in declared if f not in names]
        if missing:
            raise DataError(f"{path}: tokenizer {tokenizer.name!r} declares {missing}; the pulses hold {names}")
        chosen = [i for i, f in enumerate(names) if f in declared]
        selected = replace(events, cont=events.cont[:, :, chosen], feature_names=tuple(names[i] for i in chosen))
        result.vocab = _fitted_vocabulary(tokenizer, selected, use_met=False)
    return result


def render(e: Exploration, fmt: str = "text") -> str:
    style = "github" if fmt == "markdown" else "simple"
    q = [f"p{round(100 * p)}" for p in QUANTILES]
    out = [
        f"{e.rows} events",
        tabulate(e.stats, headers=["feature", "entries", "min", "max", "mean", *q, "invalid"], tablefmt=style,
                 floatfmt=".4g"),
        tabulate(e.types, headers=e.type_headers, tablefmt=style, floatfmt=".4g"),
    ]  # fmt: skip
    if e.vocab:
        out.append(tabulate(e.vocab, headers=["tokenizer part", "vocabulary", "clipped / outside fit"], tablefmt=style))
    if e.plots:
        out.append("histograms: " + ", ".join(str(p) for p in e.plots))
    return "\n\n".join(out)
