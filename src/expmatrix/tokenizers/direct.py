"""Direct (continuous) embedding: each value transformed (see `transforms.py`), then a value embedding.

Per object slot the features' transformed values go through a linear layer, an MLP
(Linear, LayerNorm, GELU, Linear) or periodic features (cos/sin of learned frequencies)
then a linear layer; a learned object-type embedding is added. MET and MET-phi form one
extra token, placed first. With the sentinel policy, invalid inputs take the sentinel value
and each feature gets a validity channel (+1 valid, -1 invalid, 0 at empty slots).

Shape of the tokens:
    x:    (N, O, F [+ F flags]) float32, 0 at empty slots
    ids:  (N, O) int64 object-type ids
    g:    (N, G [+ G flags]) float32 (only with MET)
    mask: (N, [1 +] O) bool
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.config import DirectTokenizerConfig
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
from expmatrix.tokenizers.embeddings import ValueEncoder
from expmatrix.tokenizers.transforms import Transform, apply, describe_invalid, fit_constants, pre_fit, valid_entries


@dataclass(frozen=True)
class EmbeddingSpec:
    kind: str  # linear | mlp | periodic
    frequencies: int = 0
    sigma: float = 0.0

    @classmethod
    def from_config(cls, e) -> EmbeddingSpec:
        return cls("periodic", e.frequencies, e.sigma) if e.kind == "periodic" else cls(e.kind)


class DirectEmbedding(nn.Module):
    """Tokens -> (B, [1 +] O, d_model), the global token first."""

    def __init__(self, n_features: int, n_globals: int, flags: bool, object_type: bool, d_model: int, spec):
        super().__init__()
        self.value = ValueEncoder(n_features, n_features if flags else 0, d_model, spec)
        self.object_type = nn.Embedding(N_OBJECT_TYPES + 1, d_model) if object_type else None
        self.globals = ValueEncoder(n_globals, n_globals if flags else 0, d_model, spec) if n_globals else None

    def forward(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.value(tokens["x"])  # (B, O, C)
        if self.object_type is not None:
            h = h + self.object_type(tokens["ids"])
        if self.globals is not None:
            h = torch.cat([self.globals(tokens["g"]).unsqueeze(1), h], dim=1)  # (B, 1+O, C)
        return h, tokens["mask"]


class DirectTokenizer(Tokenizer):
    def __init__(self, config: DirectTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        transforms = config.transforms
        missing_features(transforms, features + self.globals, config.name, "transform")
        self.transforms = {f: Transform.from_config(transforms[f]) for f in features + self.globals}
        invalid = config.invalid
        self.sentinel = invalid.value if invalid.kind == "sentinel" else None
        self.spec = EmbeddingSpec.from_config(config.embedding)
        self.object_type = config.object_type
        self.center: dict[str, float] = {}
        self.factor: dict[str, float] = {}

    def _pre(self, events: Events, f: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(op(v) - shift) * scale, validity, realness; an invalid real entry is an error without a sentinel."""
        v, real = feature_values(events, f, self.features, self.globals)
        t = self.transforms[f]
        valid = valid_entries(v, t.op)
        bad = real & ~valid
        if self.sentinel is None and bad.any():
            raise TokenizerError(describe_invalid(v[bad], t.op, f))
        return pre_fit(np.where(valid, v, 1.0), t), valid, real

    def fit(self, events: Events) -> None:
        check_events(events, self.features, self.use_met)
        for f, t in self.transforms.items():
            y, valid, real = self._pre(events, f)
            self.center[f], self.factor[f] = fit_constants(y[valid & real], t.fit, f)

    def encode(self, events: Events, names: tuple[str, ...]) -> np.ndarray:
        """(..., values of `names` [, then their validity flags +1/-1]) float32, 0 at empty slots."""
        out = None
        for k, f in enumerate(names):
            y, valid, real = self._pre(events, f)
            if out is None:  # written column by column: no stacked float64 copy
                out = np.empty((*y.shape, len(names) * (1 + (self.sentinel is not None))), np.float32)
            x = apply(y, self.transforms[f], self.center[f], self.factor[f])
            if self.sentinel is not None:
                x = np.where(valid, x, self.sentinel)
                out[..., len(names) + k] = np.where(valid, 1.0, -1.0) * real
            out[..., k] = x * real
        return out

    def transform(self, events: Events) -> Tokens:
        if len(self.center) != len(self.transforms):
            raise TokenizerError("transform before fit")
        check_events(events, self.features, self.use_met)
        out = {
            "x": torch.from_numpy(self.encode(events, self.features)),
            "ids": torch.from_numpy(events.ids),
            "mask": sequence_mask(events, int(self.use_met)),
        }
        if self.use_met:
            out["g"] = torch.from_numpy(self.encode(events, self.globals))  # (N, G [+ G])
        return out

    def embedding(self, d_model: int) -> nn.Module:
        flags = self.sentinel is not None
        return DirectEmbedding(len(self.features), len(self.globals), flags, self.object_type, d_model, self.spec)

    def state_dict(self) -> dict[str, Any]:
        transforms = {f: vars(t).copy() for f, t in self.transforms.items()}
        return {"transforms": transforms, "center": self.center, "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()["transforms"]
        theirs = {
            f: {**t, "clip": None if t["clip"] is None else tuple(t["clip"])} for f, t in state["transforms"].items()
        }
        if theirs != mine:
            raise TokenizerError(f"saved transforms {state['transforms']} differ from the config's {mine}")
        self.center, self.factor = dict(state["center"]), dict(state["factor"])
