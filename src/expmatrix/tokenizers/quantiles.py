"""Exact quantiles in two streaming passes, without sorting all values.

Pass 1 keeps every `stride`-th value (a deterministic sample) and counts; the sample's
order statistics give, for each wanted quantile, a bracket [lo, hi] that holds the exact
answer with overwhelming probability. Pass 2 counts the values below each bracket and
keeps only the values inside it (a fraction of a percent). The result is identical to
``np.quantile(values, q)`` (linear interpolation between order statistics, in float64);
a bracket that misses is widened and pass 2 repeated, so the answer never depends on luck.
Memory is the sample plus the bracket contents: `data bin` fits files larger than RAM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np

from expmatrix.tokenizers import native

SAMPLE = 200_000  # sample size aimed at: brackets ~1% of the values wide
Z = 6.0  # bracket half-width in standard deviations of the sample order statistic
CHUNK = 1 << 16  # values compared at once (stays in cache)
KERNEL_CHUNK = 1 << 22  # values the compiled kernel counts per call (its buffers: 24 MiB)


class QuantileSketch:
    """Exact quantiles `qs` of a stream of 1-D float arrays, fed in two passes."""

    def __init__(self, qs: np.ndarray, expected: int):
        self.qs = np.asarray(qs, dtype=np.float64)
        self.stride = max(1, expected // SAMPLE)
        self.n = 0
        self.lo = self.hi = float("nan")
        self._sample: list[np.ndarray] = []
        self._z = Z
        self._lock = threading.Lock()

    # ---- pass 1
    def add_sample(self, values: np.ndarray, lo: float | None = None, hi: float | None = None) -> None:
        """The next values of the stream, in order (`lo`, `hi`: their min and max, when known)."""
        start = (-self.n) % self.stride  # continue the stride across chunks
        self._sample.append(np.array(values[start :: self.stride], dtype=np.float32))
        self.n += len(values)
        if len(values):  # NaN only while no value was a number; + 0.0: -0.0 and 0.0 are one minimum
            self.lo = float(np.fmin(self.lo, values.min() if lo is None else lo)) + 0.0
            self.hi = float(np.fmax(self.hi, values.max() if hi is None else hi)) + 0.0

    def _brackets(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted float32 boundaries b (group g is [b[2g], b[2g+1])) and the group of each quantile.

        Brackets that overlap (few values, or close quantiles) are merged into one group.
        """
        s = np.sort(np.concatenate(self._sample))
        m = len(s)
        pos = self.qs * (m - 1)
        half = self._z * np.sqrt(m * self.qs * (1 - self.qs)) + 2
        lo_i, hi_i = np.floor(pos - half).astype(np.int64), np.ceil(pos + half).astype(np.int64)
        lo = np.where(lo_i < 0, -np.inf, s[np.clip(lo_i, 0, m - 1)]).astype(np.float32)
        hi = np.where(hi_i >= m, np.inf, s[np.clip(hi_i, 0, m - 1)]).astype(np.float32)
        hi = np.nextafter(hi, np.float32(np.inf))  # half-open [lo, hi) holds the sample value at hi_i
        bounds, group = [], []
        for a, b in zip(lo, hi, strict=True):
            if bounds and a <= bounds[-1]:  # overlaps the previous bracket: extend it
                bounds[-1] = max(bounds[-1], b)
            else:
                bounds += [a, b]
            group.append(len(bounds) // 2 - 1)
        return np.asarray(bounds, dtype=np.float32), np.asarray(group)

    # ---- pass 2
    def start_counting(self) -> None:
        self._b, self._group = self._brackets()
        self._seen = 0
        self._at_least = np.zeros(len(self._b), np.int64)  # values >= each boundary
        self._inside: list[np.ndarray] = []  # the values inside a bracket

    def add_count(self, values: np.ndarray) -> None:
        """Count `values` (any split of the stream, in any order; thread-safe: pieces may run in parallel)."""
        at_least, inside = np.zeros(len(self._b), np.int64), []
        b, so = self._b, native.lib()
        if so is not None and values.dtype == np.float32 and len(b) <= 16:  # the fused kernel, same counts
            buffer = np.empty(min(len(values), KERNEL_CHUNK), np.float32)
            for s in range(0, len(values), KERNEL_CHUNK):
                v = np.ascontiguousarray(values[s : s + KERNEL_CHUNK])
                n = so.bracket_count(len(v), v.ctypes.data, len(b), b.ctypes.data, at_least.ctypes.data,
                                     buffer.ctypes.data)  # fmt: skip
                if n < 0:
                    raise ValueError(f"bracket_count: {len(b)} bounds (at most 16, in pairs)")
                inside.append(buffer[:n].copy())
        else:
            ge = np.empty(min(len(values), CHUNK), dtype=bool)
            for s in range(0, len(values), CHUNK):
                v = values[s : s + CHUNK]
                g = ge[: len(v)]
                code = np.zeros(len(v), np.uint8 if len(b) < 256 else np.uint16)  # how many boundaries are <= v
                for j, x in enumerate(b):
                    np.greater_equal(v, x, out=g)
                    at_least[j] += np.count_nonzero(g)
                    code += g
                inside.append(v[(code & 1) != 0])  # odd code: inside a bracket
        with self._lock:
            self._at_least += at_least
            self._inside += inside
            self._seen += len(values)

    def result(self) -> np.ndarray | None:
        """The exact quantiles, or None when a bracket missed (widen and count again).

        The brackets are disjoint and in order, so the sorted inside values are bracket 0's, then
        bracket 1's, ...: an order statistic is an index into them (no partition per bracket).
        """
        if self.n == 0:
            raise ValueError("no values to take quantiles of")
        vals = np.sort(np.concatenate(self._inside)) if self._inside else np.zeros(0, np.float32)
        inside = self._at_least[0::2] - self._at_least[1::2]  # values per bracket
        start = np.cumsum(inside) - inside
        ranks = (self.n - 1) * self.qs
        out = []
        for j, r in enumerate(ranks):
            g = self._group[j]
            below = self._seen - self._at_least[2 * g]  # values under the bracket
            f, c = int(np.floor(r)) - below, int(np.ceil(r)) - below
            if f < 0 or c >= inside[g]:  # outside the bracket
                if self._b[2 * g] == -np.inf and self._b[2 * g + 1] == np.inf:  # it held every number: NaN or inf
                    raise ValueError("NaN or inf among the values: exact quantiles need finite values")
                self._z *= 4  # NOTE: brackets only ever miss by bad luck; wider ones then hold the answer
                return None
            out.append(lerp(float(vals[start[g] + f]), float(vals[start[g] + c]), r - np.floor(r)))
        return np.asarray(out)


def lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation between neighbouring order statistics (bit-identical to np.quantile)."""
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def all_finite(values: np.ndarray) -> bool:
    """No NaN/inf in `values`, in one pass (False may also mean a sum that overflowed: count then)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.isfinite(np.add.reduce(values, axis=None)))


def exact_quantiles_stream(
    qs: np.ndarray, chunks: Callable[[], Iterable[np.ndarray]], expected: int
) -> tuple[np.ndarray, float, float]:
    """Quantiles `qs` of all values `chunks()` yields (called twice or more), and their min and max.
    The values must be finite: a bracket never holds NaN or +inf (callers check, and say which feature)."""
    sketch = QuantileSketch(qs, expected)
    for v in chunks():
        if not all_finite(v) and not np.isfinite(v).all():
            raise ValueError("exact quantiles need finite values: NaN or inf among them")
        sketch.add_sample(v)
    while True:
        sketch.start_counting()
        for v in chunks():
            sketch.add_count(v)
        edges = sketch.result()
        if edges is not None:
            return edges, sketch.lo, sketch.hi


def exact_quantiles(values: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """``np.quantile(values, qs)`` for a 1-D array of finite floats, several times faster on millions of values."""
    if len(values) < 4 * SAMPLE:
        return np.quantile(values.astype(np.float64), qs)
    return exact_quantiles_stream(qs, lambda: [values], len(values))[0]
