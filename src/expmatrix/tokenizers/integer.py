"""Integer codes per feature, each with its own nn.Embedding (the IceCube plan's embedding).

Every feature's code is ``2 + c`` with ``c`` in 0..codes-1; 0 is padding and 1 is reserved
for masking, so a feature's table has ``codes + 2`` rows. Rules:

* ``round``: ``c = clip(round((x - first - offset) * scale), 0, codes - 1)``; with
  ``relative_to_first`` ``first`` is the event's smallest value (IceCube: the time of the first
  pulse), else 0. Clipped entries are counted in ``out_of_range``.
  NOTE: the IceCube plan's ``time_int = round(t * 3e4 + 1e4)`` cannot be used as written: on raw
  nanoseconds it gives codes of 1e8-1e9, on the normalized time it just returns nanoseconds.
  The preset takes time relative to the first pulse in bins of a chosen width, clipped.
* ``quantile``: ``c = bin - 1`` of equal-frequency bins fitted on the training split's real entries.
* ``categorical``: integer values 0..categories-1 used as they are (sensor_id: 5160 + 2 rows);
  anything else is an error.

The object type (ids 1..7) is one more part with 9 rows (``object_type: true``). Per slot the
parts are summed, or concatenated and projected; MET and MET-phi get a table each and come first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.config import IntegerTokenizerConfig
from expmatrix.config.layout import N_OBJECT_TYPES
from expmatrix.data.events import Events
from expmatrix.tokenizers.base import (
    Tokenizer,
    TokenizerError,
    Tokens,
    check_events,
    feature_values,
    missing_features,
    sequence_mask,
)
from expmatrix.tokenizers.binning import check_finite, quantile_codes
from expmatrix.tokenizers.embeddings import TableEmbedding
from expmatrix.tokenizers.quantiles import exact_quantiles

RESERVED = 2  # 0 = padding, 1 = mask


@dataclass(frozen=True)
class CodeRule:
    """A feature's resolved rule (plain values, read once from the config)."""

    kind: str  # round | quantile | categorical
    codes: int
    offset: float = 0.0
    scale: float = 1.0
    relative_to_first: bool = False

    @classmethod
    def from_config(cls, r) -> CodeRule:
        if r.kind == "round":
            return cls("round", r.codes, r.offset, r.scale, r.relative_to_first)
        return cls("quantile", r.bins) if r.kind == "quantile" else cls("categorical", r.categories)


class IntegerTokenizer(Tokenizer):
    def __init__(self, config: IntegerTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        rules = config.rules
        missing_features(rules, features + self.globals, config.name, "integer rule")
        self.rules = {f: CodeRule.from_config(rules[f]) for f in features + self.globals}
        relative = [f for f in self.globals if self.rules[f].relative_to_first]
        if relative:
            raise TokenizerError(f"tokenizer {config.name!r}: relative_to_first needs objects; {relative} are globals")
        self.object_type = config.object_type
        self.combine = config.combine
        self.edges: dict[str, list[float]] = {}
        self.range: dict[str, list[float]] = {}

    @property
    def part_vocabs(self) -> list[int]:
        return [N_OBJECT_TYPES + RESERVED] * self.object_type + [self.rules[f].codes + RESERVED for f in self.features]

    def vocabularies(self) -> dict[str, int]:
        """Rows of each embedding table, by part (codes + padding + mask)."""
        parts = ["object type"] * self.object_type + [*self.features, *self.globals]
        sizes = self.part_vocabs + [self.rules[f].codes + RESERVED for f in self.globals]
        return dict(zip(parts, sizes, strict=True))

    def fit(self, events: Events) -> None:
        check_events(events, self.features, self.use_met)
        for f, rule in self.rules.items():
            if rule.kind == "quantile":
                v, real = feature_values(events, f, self.features, self.globals)
                v = v[real]
                check_finite(v, None, f)
                if len(v) == 0:
                    raise TokenizerError(f"feature {f}: no real training entries to fit quantile bins on")
                edges = exact_quantiles(v, np.arange(1, rule.codes) / rule.codes)
                self.edges[f] = [float(x) for x in edges.astype(np.float32)]
                self.range[f] = [float(v.min()), float(v.max())]

    def _count(self, f: str, outside: np.ndarray) -> None:
        self.out_of_range[f] = int(np.count_nonzero(outside))

    def codes(self, events: Events, f: str) -> np.ndarray:
        """Codes 2..codes+1 of feature `f` (0 at empty slots): objects (N, O), globals (N,)."""
        v, real = feature_values(events, f, self.features, self.globals)
        rule = self.rules[f]
        check_finite(v, real, f)
        if rule.kind == "quantile":
            lo, hi = self.range[f]
            self._count(f, real & ((v < lo) | (v > hi)))
            c = quantile_codes(v, np.asarray(self.edges[f], dtype=np.float32)).astype(np.int64)
        elif rule.kind == "categorical":
            bad = real & ((v != np.round(v)) | (v < 0) | (v >= rule.codes))
            if bad.any():
                raise TokenizerError(
                    f"feature {f}: {int(bad.sum())} values are not integers in 0..{rule.codes - 1}, "
                    f"e.g. {float(v[bad][0])}"
                )
            c = np.where(real, v, 0).astype(np.int64)
        else:
            first = np.where(real, v, np.inf).min(axis=1, keepdims=True) if rule.relative_to_first else 0.0
            k = np.rint((np.where(real, v - first, 0.0) - rule.offset) * rule.scale)
            self._count(f, real & ((k < 0) | (k > rule.codes - 1)))
            c = np.clip(k, 0, rule.codes - 1).astype(np.int64)
        return np.where(real, c + RESERVED, 0)

    def transform(self, events: Events) -> Tokens:
        if len(self.edges) != sum(r.kind == "quantile" for r in self.rules.values()):
            raise TokenizerError("transform before fit")
        check_events(events, self.features, self.use_met)
        self.out_of_range = {}
        parts = [np.where(events.real, events.ids + 1, 0)] * self.object_type + [
            self.codes(events, f) for f in self.features
        ]
        out = {"codes": torch.from_numpy(np.stack(parts, axis=-1)), "mask": sequence_mask(events, len(self.globals))}
        if self.globals:
            out["g"] = torch.from_numpy(np.stack([self.codes(events, f) for f in self.globals], axis=1))
        return out

    def embedding(self, d_model: int) -> nn.Module:
        global_vocabs = list(self.vocabularies().values())[len(self.part_vocabs) :]
        return TableEmbedding(self.part_vocabs, global_vocabs, d_model, self.combine)

    def state_dict(self) -> dict[str, Any]:
        return {"rules": {f: vars(r).copy() for f, r in self.rules.items()}, "edges": self.edges, "range": self.range}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()["rules"]
        if state["rules"] != mine:
            raise TokenizerError(f"saved rules {state['rules']} differ from the config's {mine}")
        self.edges = {f: list(e) for f, e in state["edges"].items()}
        self.range = {f: list(r) for f, r in state["range"].items()}
