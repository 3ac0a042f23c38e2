"""Direct (continuous) embedding: each value transformed, standardized, linearly projected.

Per feature: ``log`` or ``identity``, then ``(v - mean) / std`` with mean and std
fitted on the real objects of the training split (globals on its events).
The object-type id is embedded and added. MET and MET-phi form one extra token, placed first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.data.events import Events
from expmatrix.data.layout import GLOBAL_NAMES, N_OBJECT_TYPES
from expmatrix.spec import DirectTokenizerConfig
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens, check_object_ids, sequence_mask


def _apply(values: np.ndarray, rule: str, name: str) -> np.ndarray:
    if rule == "identity":
        return values
    if (values <= 0).any():
        raise TokenizerError(f"feature {name}: {(values <= 0).sum()} non-positive values cannot take a log")
    return np.log(values)


class DirectEmbedding(nn.Module):
    """(x (B, O, F), ids (B, O)[, g (B, G)]) -> (B, [1 +] O, d_model), the global token first."""

    def __init__(self, n_features: int, n_globals: int, d_model: int):
        super().__init__()
        self.value = nn.Linear(n_features, d_model)
        self.object_type = nn.Embedding(N_OBJECT_TYPES + 1, d_model)
        self.globals = nn.Linear(n_globals, d_model) if n_globals else None

    def forward(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.value(tokens["x"]) + self.object_type(tokens["ids"])  # (B, O, C)
        if self.globals is not None:
            h = torch.cat([self.globals(tokens["g"]).unsqueeze(1), h], dim=1)  # (B, 1+O, C)
        return h, tokens["mask"]


class DirectTokenizer(Tokenizer):
    def __init__(self, config: DirectTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        self.globals = GLOBAL_NAMES if use_met else ()
        missing = [f for f in features + self.globals if f not in config.transforms]
        if missing:
            raise TokenizerError(f"tokenizer {config.name!r}: no transform for features {missing}")
        self.rules = {f: config.transforms[f] for f in features + self.globals}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}

    def _columns(self, events: Events, real_only: bool) -> dict[str, np.ndarray]:
        """Transformed values per feature: real objects (flat) or all slots (N, O)."""
        real = events.real
        cols = {}
        for i, f in enumerate(self.features):
            v = events.cont[:, :, i]
            cols[f] = (
                _apply(v[real], self.rules[f], f)
                if real_only
                else np.where(real, _apply(np.where(real, v, 1.0), self.rules[f], f), 0.0)
            )
        for i, f in enumerate(self.globals):
            cols[f] = _apply(events.globals_[:, i], self.rules[f], f)
        return cols

    def fit(self, events: Events) -> None:
        check_object_ids(events, N_OBJECT_TYPES)
        for f, v in self._columns(events, real_only=True).items():
            if len(v) == 0:
                raise TokenizerError(f"feature {f}: no real entries to fit on")
            self.mean[f], self.std[f] = float(v.mean()), float(v.std()) or 1.0

    def _standardize(self, cols: dict[str, np.ndarray], names) -> np.ndarray:
        return np.stack([(cols[f] - self.mean[f]) / self.std[f] for f in names], axis=-1).astype(np.float32)

    def transform(self, events: Events) -> Tokens:
        if not self.mean:
            raise TokenizerError("transform before fit")
        check_object_ids(events, N_OBJECT_TYPES)
        cols = self._columns(events, real_only=False)
        x = self._standardize(cols, self.features) * events.real[:, :, None]  # (N, O, F), 0 at padding
        out = {
            "x": torch.from_numpy(x),
            "ids": torch.from_numpy(events.ids),
            "mask": sequence_mask(events, int(self.use_met)),
        }
        if self.use_met:
            out["g"] = torch.from_numpy(self._standardize(cols, self.globals))  # (N, G)
        return out

    def embedding(self, d_model: int) -> nn.Module:
        return DirectEmbedding(len(self.features), len(self.globals), d_model)

    def state_dict(self) -> dict[str, Any]:
        return {"rules": self.rules, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["rules"] != self.rules:
            raise TokenizerError(f"saved rules {state['rules']} differ from the config's {self.rules}")
        self.mean, self.std = dict(state["mean"]), dict(state["std"])
