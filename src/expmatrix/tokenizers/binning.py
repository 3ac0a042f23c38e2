"""Per-feature bins (numpy, on torch's thread count), shared by the joint and the factorized binned tokenizers.

A feature's bin *code* runs 0..n-1 (the bin number minus one):

* ``quantile``: n equal-frequency bins; the n-1 inner edges are fitted on the training
  split's real entries (optionally per object type, optionally on background events only),
  so each bin holds 1/n of them. A value equal to an edge goes to the upper bin; values
  below the first edge or above the last go to the edge bins. Edges are stored as float32,
  the data's precision, so that the bins a value falls in are exactly reproducible.
* ``fixed``: n equal widths over ``[low, high)``; values outside go to the edge bins.
* ``cyclic``: an angle; n equal widths over ``[low, high)``, wrapping around. For phi over
  [-pi, pi) with 5 bins the width is 2*pi/5.
  NOTE: the thesis plan writes "width pi/5", which cannot give 5 bins over [-pi, pi).

Values outside the fitted range (quantile: below the training minimum or above its maximum;
fixed: outside the range) are counted per feature in ``out_of_range`` by every `codes` call.

The object slots are binned by the fused kernels of `native.c` when they compile (`native_table`,
`gather`); the numpy functions here are the reference and the fallback, with the same results.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from expmatrix.config.layout import N_OBJECT_TYPES
from expmatrix.data.events import Events
from expmatrix.tokenizers import native
from expmatrix.tokenizers.errors import TokenizerError
from expmatrix.tokenizers.parallel import chunks, parallel_map, threads
from expmatrix.tokenizers.quantiles import QuantileSketch, all_finite

COUNT_PIECE = 1 << 20  # values one thread counts at once in the fit's second pass


@dataclass(frozen=True)
class BinRule:
    """A feature's resolved binning rule (plain values, read once from the config)."""

    kind: str  # quantile | fixed | cyclic
    bins: int
    low: float = 0.0  # fixed/cyclic: start of the range
    width: float = 0.0  # fixed/cyclic: bin width

    @classmethod
    def from_config(cls, rule: Any, default_bins: int) -> BinRule:
        bins = rule.bins or default_bins
        if rule.kind == "quantile":
            return cls("quantile", bins)
        low, high = rule.range
        return cls(rule.kind, bins, float(low), (float(high) - float(low)) / bins)


def code_dtype(n: int) -> type:
    return np.uint8 if n <= 255 else np.int32


def quantile_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Number of edges <= value (0..len(edges)); `edges` sorted float32."""
    code = (values >= edges[0]).view(np.uint8)  # a fresh array: counting in place is safe
    if code_dtype(len(edges) + 1) is not np.uint8:
        code = code.astype(code_dtype(len(edges) + 1))
    for e in edges[1:]:
        code += values >= e
    return code


def width_edges(rule: BinRule) -> np.ndarray:
    """Inner edges low + k * width (k = 1..n-1) of a fixed or cyclic rule, as float32."""
    return (rule.low + rule.width * np.arange(1, rule.bins)).astype(np.float32)


def wrap(values: np.ndarray, rule: BinRule) -> np.ndarray:
    """Angles outside [low, low + n * width) moved into it by whole periods (float64, then float32)."""
    period = rule.bins * rule.width
    high = np.float32(rule.low + period)
    wrapped = (rule.low + np.mod(values.astype(np.float64) - rule.low, period)).astype(np.float32)
    return np.where(wrapped >= high, np.float32(rule.low), wrapped)  # float32 rounding can land on high


def count_real(mask: np.ndarray, real: np.ndarray | None) -> int:
    """Entries of `mask` that are real (all of them when `real` is None)."""
    return int(np.count_nonzero(mask if real is None else mask & real))


def count_nonfinite(values: np.ndarray, real: np.ndarray | None = None) -> int:
    """NaN/inf among the real entries of `values` (all of them when `real` is None)."""
    if all_finite(values):
        return 0  # the common case, in one pass
    bad = ~np.isfinite(values)
    return int(np.count_nonzero(bad if real is None else bad & real))


def check_finite(values: np.ndarray, real: np.ndarray | None, name: str) -> None:
    """NaN/inf in real entries cannot be binned (they would silently fall into bin 1)."""
    if bad := count_nonfinite(values, real):
        raise TokenizerError(f"feature {name}: {bad} NaN/inf values cannot be binned")


class Column(NamedTuple):
    """Values edges are fitted on, their count of NaN/inf, and their min and max (None: not computed)."""

    values: np.ndarray
    bad: int
    lo: float | None = None
    hi: float | None = None


def gather(events: Events, cols: list[int], chosen: np.ndarray | None, kind: int | None) -> list[Column]:
    """Feature columns `cols` of the real objects (of type `kind`; of the `chosen` events), in slot order."""
    so, ids, cont = native.lib(), events.ids, events.cont
    if so is None or ids.dtype != np.int64 or cont.dtype != np.float32 or not ids.size:
        take = events.real if chosen is None else events.real & chosen[:, None]
        take = take if kind is None else take & (ids == kind)
        return [Column(v, count_nonfinite(v)) for v in (cont[:, :, c][take] for c in cols)]
    ids, cont = np.ascontiguousarray(ids), np.ascontiguousarray(cont)
    sel = None if chosen is None else np.ascontiguousarray(chosen, dtype=np.uint8)
    col = np.asarray(cols, np.int32)  # named: a temporary would be freed before the call reads it
    args = (*ids.shape, ids.ctypes.data, cont.ctypes.data, cont.shape[2], len(cols), col.ctypes.data,
            native.address(sel), kind or 0)  # fmt: skip
    n = so.gather(*args, None, None, None)  # counted first: exact allocations, also where memory is not overcommitted
    outs = [np.empty(max(n, 0), np.float32) for _ in cols]
    lohi, bad = np.tile(np.float32([np.inf, -np.inf]), (len(cols), 1)), np.zeros(len(cols), np.int64)
    to = (ctypes.c_void_p * len(cols))(*[o.ctypes.data for o in outs])
    if n < 0 or so.gather(*args, to, lohi.ctypes.data, bad.ctypes.data) != n:
        raise MemoryError("the gather kernel could not allocate its buffer")
    bounds = lohi.tolist() if n else [(None, None)] * len(cols)
    return [Column(o, b, lo, hi) for o, b, (lo, hi) in zip(outs, bad.tolist(), bounds, strict=True)]


def feed(sketches: dict, chunk: dict[Any, Column], method: Callable, piece: int | None = None) -> None:
    """`method(sketch, column)` for every sketch and its column in `chunk`, on parallel threads; with `piece`,
    `method(sketch, values)` on pieces of at most that many values (a method that takes any split of the
    stream, in any order)."""
    if piece is None:
        tasks = [(t, chunk[t]) for t in sketches]
    else:
        tasks = [(t, chunk[t].values[s]) for t in sketches for s in chunks(len(chunk[t].values), piece)]
    parallel_map(lambda task: method(sketches[task[0]], task[1]), tasks)


class Binner:
    """Bins of the object features (per slot) and of the globals (per event)."""

    def __init__(self, rules: dict[str, BinRule], objects: tuple[str, ...], globals_: tuple[str, ...]):
        self.rules, self.objects, self.globals = rules, objects, globals_
        self.quantile = [f for f in objects + globals_ if rules[f].kind == "quantile"]
        self.fit_on = "all"
        self.per_type = False
        self.edges: dict[str, Any] = {}  # feature -> edges, or {type: edges} per object type
        self.range: dict[str, list[float]] = {}  # feature -> [min, max] of the fitted entries
        self.out_of_range: dict[str, int] = {}
        self._lock = threading.Lock()

    def set_fit_options(self, fit_on: str, per_type: bool) -> None:
        self.fit_on, self.per_type = fit_on, per_type

    @property
    def fitted(self) -> bool:
        return set(self.edges) == set(self.quantile)

    # ---------------------------------------------------------------- fit
    def _check_values(self, chunks: list[dict]) -> None:
        """NaN/inf among the values edges are fitted on is an error naming the feature: the first feature in
        order, its values in all `chunks` counted (the per-type values are among the pooled ones)."""
        for f in self.quantile:
            if bad := sum(c[f, None].bad for c in chunks):
                raise TokenizerError(f"feature {f}: {bad} NaN/inf values cannot be binned")

    def _chosen(self, events: Events) -> np.ndarray | None:
        """The events edges are fitted on (None: all)."""
        return events.label == 0 if self.fit_on == "background" else None

    def _targets(self) -> list[tuple[str, int | None]]:
        per_type = [(f, t) for f in self.quantile if f in self.objects for t in range(1, N_OBJECT_TYPES + 1)]
        return [(f, None) for f in self.quantile] + (per_type if self.per_type else [])

    def _chunk_values(self, events: Events) -> tuple[int, dict[tuple[str, int | None], Column]]:
        """(chosen events, the values of every edge set to fit) of one chunk."""
        chosen, targets = self._chosen(events), self._targets()
        values, by_kind = {}, {}
        for t in targets:
            if t[0] in self.globals:
                v = events.globals_[:, self.globals.index(t[0])]
                values[t] = Column(v := v if chosen is None else v[chosen], count_nonfinite(v))
            else:
                by_kind.setdefault(t[1], []).append(t)
        cols = {k: [self.objects.index(f) for f, _ in ts] for k, ts in by_kind.items()}  # one pass per type
        found = parallel_map(lambda k: gather(events, cols[k], chosen, k), list(by_kind))
        for ts, vs in zip(by_kind.values(), found, strict=True):
            values.update(zip(ts, vs, strict=True))
        return len(events) if chosen is None else int(chosen.sum()), values

    def fit(self, events: Events) -> None:
        """Exact edges; the values are extracted once (a part per thread), and read by both passes."""
        parts = chunks(len(events), -(-len(events) // threads()) or 1)
        values = parallel_map(lambda s: self._chunk_values(events.rows(s)), parts)
        self._check_values([chunk for _, chunk in values])
        self._fit_from(lambda: values, events.ids.size)

    def fit_stream(self, chunks: Callable[[], Iterable[Events]], expected: int) -> None:
        """Fit from `chunks()` (called at least twice); exact, memory-bounded."""

        def checked(events: Events) -> tuple[int, dict]:
            values = self._chunk_values(events)
            self._check_values([values[1]])
            return values

        self._fit_from(lambda: (checked(ev) for ev in chunks()), expected)

    def _fit_from(self, values: Callable[[], Iterable[tuple[int, dict]]], expected: int) -> None:
        """Two passes (see `quantiles.py`) over the per-chunk values; a missed bracket costs one more pass."""
        targets = self._targets()
        qs = {t: np.arange(1, self.rules[t[0]].bins) / self.rules[t[0]].bins for t in targets}
        sketches = {t: QuantileSketch(qs[t], expected) for t in targets}
        chosen_events = 0
        for chosen, chunk in values():
            chosen_events += chosen
            feed(sketches, chunk, lambda sketch, col: sketch.add_sample(col.values, col.lo, col.hi))
        if not chosen_events:
            raise TokenizerError(f"fit_on={self.fit_on}: the training split has no such events")
        # a type with fewer training objects than bins keeps the pooled edges
        pending = {t: sk for t, sk in sketches.items() if sk.n >= (1 if t[1] is None else self.rules[t[0]].bins)}
        while pending:
            parallel_map(QuantileSketch.start_counting, pending.values())  # sorts the samples
            for _, chunk in values():
                feed(pending, chunk, QuantileSketch.add_count, piece=COUNT_PIECE)
            results = dict(zip(pending, parallel_map(QuantileSketch.result, pending.values()), strict=True))
            self._store(sketches, {t: r for t, r in results.items() if r is not None})
            pending = {t: sk for t, sk in pending.items() if results[t] is None}
        missing = [f for f in self.quantile if f not in self.edges]
        if missing:
            raise TokenizerError(f"features {missing}: no real training entries to fit edges on")

    def _store(self, sketches: dict, results: dict[tuple[str, int | None], np.ndarray]) -> None:
        for (f, kind), edges in results.items():
            e32 = [float(x) for x in np.asarray(edges, dtype=np.float32)]
            if kind is None:
                self.range[f] = [float(sketches[f, None].lo), float(sketches[f, None].hi)]
            if self.per_type and f in self.objects:  # per type, "all": the pooled edges
                self.edges.setdefault(f, {})["all" if kind is None else str(kind)] = e32
            else:
                self.edges[f] = e32

    # ---------------------------------------------------------------- codes
    def _edges(self, f: str, kind: int | None = None) -> np.ndarray:
        e = self.edges[f]
        if isinstance(e, dict):  # per object type; a type with too few training objects uses the pooled edges
            e = e.get(str(kind), e["all"])
        return np.asarray(e, dtype=np.float32)

    def _bounds(self, f: str) -> tuple[float, float]:
        rule = self.rules[f]
        return tuple(self.range[f]) if rule.kind == "quantile" else (rule.low, rule.low + rule.bins * rule.width)

    def codes(self, f: str, values: np.ndarray, ids: np.ndarray | None = None, real: np.ndarray | None = None):
        """Bin codes 0..n-1 of `values` of feature `f` (objects: pass their `ids` and `real` mask).

        Every rule is a count of float32 edges <= value: fixed values beyond the range land in the
        edge bins, cyclic ones are first wrapped into the range. NaN/inf in a real entry is an error;
        real entries outside the fitted range (quantile) or the range (fixed) are counted. Codes of
        empty slots are meaningless: callers zero them.
        """
        rule = self.rules[f]
        lo, hi = self._bounds(f)
        v = np.ascontiguousarray(values)
        mn, mx = (v.min(), v.max()) if v.size else (lo, lo)  # NaN and inf propagate: one check for both
        if not (np.isfinite(mn) and np.isfinite(mx)):
            check_finite(v, real, f)  # raises unless only empty slots hold NaN/inf
            v = np.where(real, v, np.float32(lo))
            mn, mx = v.min(), v.max()
        if rule.kind == "cyclic":
            if mn < lo or mx >= np.float32(hi):  # only values outside are wrapped (float32(-pi) stays in bin 1)
                v = np.where((v < lo) | (v >= np.float32(hi)), wrap(v, rule), v)
            return quantile_codes(v, width_edges(rule))
        above = np.greater if rule.kind == "quantile" else np.greater_equal
        n = (count_real(v < lo, real) if mn < lo else 0) + (count_real(above(v, hi), real) if above(mx, hi) else 0)
        if n:
            with self._lock:  # chunks are binned on several threads
                self.out_of_range[f] = self.out_of_range.get(f, 0) + n
        if rule.kind == "fixed" or not isinstance(self.edges[f], dict):
            return quantile_codes(v, width_edges(rule) if rule.kind == "fixed" else self._edges(f))
        out = np.zeros(values.shape, dtype=code_dtype(rule.bins))
        for kind in range(1, N_OBJECT_TYPES + 1):
            sel = ids == kind
            out[sel] = quantile_codes(v[sel], self._edges(f, kind))
        return out

    def native_table(self, names: Sequence[str], radix: Sequence[int], offsets: Sequence[int] | None = None):
        """Features `names` (all objects, or all globals) as `native.Feature`s: code place values `radix`,
        token offsets; and the edge arrays the table points to (keep them alive while it is used)."""
        table, keep = (native.Feature * len(names))(), []
        for k, (f, r) in enumerate(zip(names, radix, strict=True)):
            rule = self.rules[f]
            lo, hi = self._bounds(f)
            if rule.kind == "quantile":  # per object type (row 0, empty slots: the pooled edges)
                edges = np.stack([self._edges(f, t) for t in range(native.N_TYPES)])
            else:
                edges = np.tile(width_edges(rule), (native.N_TYPES, 1))
            keep.append(edges := np.ascontiguousarray(edges, dtype=np.float32))
            table[k] = native.Feature(col=k, cyclic=rule.kind == "cyclic", upper_out=rule.kind == "quantile",
                                      n_edges=edges.shape[1], per_type=isinstance(self.edges.get(f), dict), lo=lo,
                                      hi=hi, low=rule.low, period=rule.bins * rule.width, radix=r,
                                      offset=offsets[k] if offsets else 0, edges=edges.ctypes.data)  # fmt: skip
        return table, keep

    def add_counts(self, names: Sequence[str], counts: np.ndarray) -> None:
        """Add a kernel's (features, 2) counts of out-of-range and of NaN/inf real values of `names`; NaN/inf
        is an error naming the first such feature."""
        for f, (outside, bad) in zip(names, counts.tolist(), strict=True):
            if bad:
                raise TokenizerError(f"feature {f}: {bad} NaN/inf values cannot be binned")
            if self.rules[f].kind != "cyclic":
                self.out_of_range[f] += outside

    def reset_counts(self) -> dict[str, int]:
        """Start counting out-of-range entries afresh (every feature at 0); the dict that will hold them."""
        self.out_of_range = dict.fromkeys([f for f in self.objects + self.globals if self.rules[f].kind != "cyclic"], 0)
        return self.out_of_range

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        rules = {f: vars(r).copy() for f, r in self.rules.items()}
        return {"rules": rules, "fit_on": self.fit_on, "per_object_type": self.per_type, "edges": self.edges,
                "range": self.range}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("rules", "fit_on", "per_object_type"):
            if state[key] != mine[key]:
                raise TokenizerError(f"saved binning {key} {state[key]} differs from the config's {mine[key]}")
        self.edges = {f: (dict(e) if isinstance(e, dict) else list(e)) for f, e in state["edges"].items()}
        self.range = {f: list(r) for f, r in state["range"].items()}
