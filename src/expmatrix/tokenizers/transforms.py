"""Per-feature continuous transforms (numpy): v -> clip(fitted((op(v) - shift) * scale)).

``op``: identity, log, log10, log1p. ``fit``: none; standardize, ``(y - mean) / std``; robust,
``(y - median) / max(p84 - p50, p50 - p16)`` (a spread that ignores the tails). The fitted
constants come from the training split's real, valid entries. ``clip`` bounds the result.
An invalid input (NaN/inf, or outside the op's domain: <= 0 for log and log10, <= -1 for
log1p) is an error, or, with the sentinel policy, becomes the sentinel value and is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from expmatrix.tokenizers.errors import TokenizerError

OPS = {"identity": None, "log": np.log, "log10": np.log10, "log1p": np.log1p}
DOMAIN = {"log": ("non-positive", 0.0), "log10": ("non-positive", 0.0), "log1p": ("<= -1", -1.0)}


@dataclass(frozen=True)
class Transform:
    """A feature's resolved transform (plain values, read once from the config)."""

    op: str
    shift: float
    scale: float
    fit: str  # none | standardize | robust
    clip: tuple[float, float] | None

    @classmethod
    def from_config(cls, t) -> Transform:
        return cls(t.op, t.shift, t.scale, t.fit, None if t.clip is None else (float(t.clip[0]), float(t.clip[1])))


def valid_entries(values: np.ndarray, op: str) -> np.ndarray:
    """Entries the op can take: finite and inside its domain."""
    ok = np.isfinite(values)
    if op in DOMAIN:
        ok &= values > DOMAIN[op][1]
    return ok


def describe_invalid(values: np.ndarray, op: str, name: str) -> str:
    n_nan = int((~np.isfinite(values)).sum())
    if n_nan:
        return f"feature {name}: {n_nan} NaN/inf values"
    what, bound = DOMAIN[op]
    return f"feature {name}: {int((values <= bound).sum())} {what} values cannot take a {op}"


def pre_fit(values: np.ndarray, t: Transform) -> np.ndarray:
    """(op(v) - shift) * scale for valid values, float64."""
    v = values.astype(np.float64)
    if OPS[t.op] is not None:
        v = OPS[t.op](v)
    return (v - t.shift) * t.scale


def fit_constants(y: np.ndarray, how: str, name: str) -> tuple[float, float]:
    """(center, factor) such that the fitted value is (y - center) * factor."""
    if how == "none":
        return 0.0, 1.0
    if len(y) == 0:
        raise TokenizerError(f"feature {name}: no valid real training entries to fit on")
    if how == "standardize":
        std = float(y.std())
        return float(y.mean()), 1.0 / std if std > 0 else 1.0
    p16, p50, p84 = np.quantile(y, [0.16, 0.5, 0.84])
    spread = max(p84 - p50, p50 - p16)
    return float(p50), 1.0 / spread if spread > 0 else 1.0


def apply(y: np.ndarray, t: Transform, center: float, factor: float) -> np.ndarray:
    out = (y - center) * factor
    return np.clip(out, *t.clip) if t.clip is not None else out


INVERSE = {"identity": None, "log": np.exp, "log10": lambda v: np.power(10.0, v), "log1p": np.expm1}


def invert(x: np.ndarray, t: Transform, center: float, factor: float) -> np.ndarray:
    """The physical value whose transform is `x` (the inverse of `apply` after `pre_fit`; clipping is lost)."""
    v = (np.asarray(x, np.float64) / factor + center) / t.scale + t.shift
    return INVERSE[t.op](v) if INVERSE[t.op] is not None else v
