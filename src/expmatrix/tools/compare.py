"""`expmatrix data compare`: our binned file against a colleague's, token by token, streamed in chunks.

Their file may store one combined split (the reference file is ``..._train_AND_test.h5``) and
other dataset names: their rows are the concatenation of ``their_keys``, ours of ``our_splits``
(by default the splits whose total matches their row count: train+test, then all three, ...).
Joint tokens are decoded with our file's stored binning (object type and one bin per feature),
so a disagreement can be traced to the feature whose bins differ.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import h5py
import numpy as np
from tabulate import tabulate
from tqdm import tqdm

from expmatrix.config.layout import GLOBAL_NAMES, N_OBJECTS, SPLITS
from expmatrix.data.fourtops import DataError, dataset
from expmatrix.tokenizers import build_tokenizer
from expmatrix.tokenizers.binned import BinnedTokenizer

CHUNK_ROWS = 1 << 16
WIDTH = N_OBJECTS + 2


class Rows:
    """Rows of several [N, 20] datasets of one file, read as one concatenated array, a range at a time."""

    def __init__(self, path: Path, keys: list[str]):
        self.path, self.keys = path, keys
        with h5py.File(path, "r") as f:
            self.sizes = [len(dataset(f, path, k)) for k in keys]
            for k in keys:
                if f[k].ndim != 2 or f[k].shape[1] != WIDTH:
                    raise DataError(f"{path}: dataset {k!r} has shape {f[k].shape}; expected (N, {WIDTH}) tokens")
        self.bounds = np.cumsum([0, *self.sizes])

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def read(self, f: h5py.File, start: int, stop: int) -> np.ndarray:
        parts = []
        for k, lo, hi in zip(self.keys, self.bounds[:-1], self.bounds[1:], strict=True):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                parts.append(f[k][a - lo : b - lo].astype(np.int64))
        return np.concatenate(parts) if parts else np.zeros((0, WIDTH), np.int64)


@dataclass
class Comparison:
    ours: str
    theirs: str
    rows: int
    aligned: bool
    equal: np.ndarray = field(default_factory=lambda: np.zeros(WIDTH, np.int64))  # per position
    real_equal: int = 0
    real: int = 0  # positions where either side holds a token
    feature_equal: Counter = field(default_factory=Counter)
    feature_total: Counter = field(default_factory=Counter)
    freq_ours: Counter = field(default_factory=Counter)
    freq_theirs: Counter = field(default_factory=Counter)
    disagreements: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def _our_tokenizer(f: h5py.File, path: Path) -> BinnedTokenizer:
    """The joint tokenizer our file was written with (its preset and fitted edges are stored as attributes)."""
    from pydantic import TypeAdapter

    from expmatrix.config import TokenizerConfig

    if "tokenizer" not in f.attrs or "state" not in f.attrs:
        raise DataError(f"{path}: no 'tokenizer'/'state' attributes: not written by `expmatrix data bin`")
    config = TypeAdapter(TokenizerConfig).validate_json(f.attrs["tokenizer"])
    tok = build_tokenizer(config, tuple(json.loads(f.attrs["features"])), use_met=True)
    tok.load_state_dict(json.loads(f.attrs["state"]))
    return tok


def _default_splits(ours: Path, n_theirs: int) -> list[str]:
    with h5py.File(ours, "r") as f:
        sizes = {s: len(dataset(f, ours, f"X_{s}")) for s in SPLITS}
    candidates = [["train", "test"], list(SPLITS)] + [list(c) for r in (1, 2) for c in combinations(SPLITS, r)]
    for c in candidates:
        if sum(sizes[s] for s in c) == n_theirs:
            return c
    return list(SPLITS)


def _decode(tok: BinnedTokenizer, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Object type and bin per feature of the object columns; the global columns' bins."""
    out = tok.decode(rows[:, :N_OBJECTS])
    for k, name in enumerate(GLOBAL_NAMES):
        out[name] = rows[:, N_OBJECTS + k] - tok.global_offsets[k]
    return out


def _accumulate(c: Comparison, tok: BinnedTokenizer, a: np.ndarray, b: np.ndarray) -> None:
    c.freq_ours.update(dict(zip(*np.unique(a, return_counts=True), strict=True)))
    c.freq_theirs.update(dict(zip(*np.unique(b, return_counts=True), strict=True)))
    if not c.aligned:
        return
    same = a == b
    c.equal += same.sum(axis=0)
    real = (a != 0) | (b != 0)
    c.real += int(real.sum())
    c.real_equal += int((same & real).sum())
    da, db = _decode(tok, a), _decode(tok, b)
    both = (da["type"] > 0) & (db["type"] > 0)
    for name in da:
        where = both if name not in GLOBAL_NAMES else np.ones(len(a), dtype=bool)
        c.feature_equal[name] += int((da[name] == db[name])[where].sum())
        c.feature_total[name] += int(where.sum())
    pairs = a[~same] * (1 << 32) + b[~same]
    c.disagreements.update(dict(zip(*np.unique(pairs, return_counts=True), strict=True)))


def compare_files(
    ours: str | Path,
    theirs: str | Path,
    their_keys: list[str] | None = None,
    our_splits: list[str] | None = None,
    progress: bool = True,
) -> tuple[Comparison, BinnedTokenizer]:
    """Token agreement of two binned files in the thesis layout ([N, 20], objects then MET, MET-phi)."""
    ours, theirs = Path(ours), Path(theirs)
    for p in (ours, theirs):
        if not p.exists():
            raise DataError(f"{p}: data file not found")
    with h5py.File(theirs, "r") as f:
        if their_keys is None:
            same = [f"X_{s}" for s in SPLITS]
            their_keys = same if all(k in f for k in same) else [k for k in f if f[k].ndim == 2]
    b_rows = Rows(theirs, their_keys)
    our_splits = our_splits or _default_splits(ours, len(b_rows))
    a_rows = Rows(ours, [f"X_{s}" for s in our_splits])
    c = Comparison(str(ours), str(theirs), len(a_rows), aligned=len(a_rows) == len(b_rows))
    c.notes.append(
        f"ours: {' + '.join(a_rows.keys)} ({len(a_rows)} rows); theirs: {' + '.join(their_keys)} ({len(b_rows)})"
    )
    if not c.aligned:
        c.notes.append("row counts differ: only the token frequencies are compared (choose --our-splits/--their-keys)")
    with h5py.File(ours, "r") as fa, h5py.File(theirs, "r") as fb:
        tok = _our_tokenizer(fa, ours)
        n = min(len(a_rows), len(b_rows)) if c.aligned else max(len(a_rows), len(b_rows))
        for s in tqdm(range(0, n, CHUNK_ROWS), unit="chunk", disable=not progress):
            a = a_rows.read(fa, s, min(s + CHUNK_ROWS, len(a_rows)))
            b = b_rows.read(fb, s, min(s + CHUNK_ROWS, len(b_rows)))
            _accumulate(c, tok, a, b)
    return c, tok


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.3f}%" if n else "n/a"


def render(c: Comparison, tok: BinnedTokenizer, fmt: str = "text", top: int = 10) -> str:
    """Tables: agreement overall and per feature/position, frequencies side by side, top disagreements."""
    style = "github" if fmt == "markdown" else "simple"
    out = [f"ours: {c.ours}\ntheirs: {c.theirs}", *c.notes]
    if c.aligned:
        total = c.rows * WIDTH
        out.append(
            tabulate(
                [
                    ["all positions", _pct(int(c.equal.sum()), total), total],
                    ["positions with a token on either side", _pct(c.real_equal, c.real), c.real],
                    *[
                        [f"bin of {k}", _pct(c.feature_equal[k], c.feature_total[k]), c.feature_total[k]]
                        for k in c.feature_total
                    ],
                ],
                headers=["token agreement", "equal", "compared"],
                tablefmt=style,
            )
        )
        names = [f"object {i}" for i in range(N_OBJECTS)] + list(GLOBAL_NAMES)
        out.append(tabulate([[n, _pct(int(e), c.rows)] for n, e in zip(names, c.equal, strict=True)],
                            headers=["position", "equal"], tablefmt=style))  # fmt: skip
    common = (c.freq_ours + c.freq_theirs).most_common(top)
    out.append(tabulate([[t, c.freq_ours[t], c.freq_theirs[t]] for t, _ in common],
                        headers=["token", "ours", "theirs"], tablefmt=style))  # fmt: skip
    if c.aligned:
        rows = []
        for pair, k in c.disagreements.most_common(top):
            a, b = divmod(int(pair), 1 << 32)
            rows.append([a, b, k, _describe(tok, a), _describe(tok, b)])
        out.append(
            tabulate(rows, headers=["ours", "theirs", "count", "ours decoded", "theirs decoded"], tablefmt=style)
        )
    return "\n\n".join(out)


def _describe(tok: BinnedTokenizer, token: int) -> str:
    if token == 0:
        return "padding"
    if token <= tok.n_particle_tokens:
        d = tok.decode(np.array([token]))
        return f"type {d['type'][0]}, " + ", ".join(f"{f} bin {d[f][0]}" for f in tok.features)
    for k, name in reversed(list(enumerate(GLOBAL_NAMES))):
        if token > tok.global_offsets[k]:
            return f"{name} bin {token - tok.global_offsets[k]}"
    return "?"
