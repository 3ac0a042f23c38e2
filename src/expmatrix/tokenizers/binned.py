"""Joint (Ambre) binning: one integer token per object from its type and binned features.

For the 4-vector (pT, eta, phi) with 5 bins and 7 object types this is exactly
``125*(obj-1) + 25*(bin_pT-1) + 5*(bin_eta-1) + bin_phi`` in [1, 875]; in general a
mixed-radix number over the selected features in their order, with the object type
as the most significant digit:

    token = 1 + (obj-1) * n**F + sum_f (bin_f - 1) * n**(F-1-f)     in [1, 7 * n**F]

MET tokens follow the particle range (7 * n**F + bin_MET, 875 + 1..5 for the
4-vector), then MET-phi tokens (7 * n**F + n + bin_phi); padding is 0, so the
vocabulary is ``7 * n**F + 2n + 1`` (886 for the 4-vector, 4386 for the 5-vector).
In the model's sequence the MET and MET-phi tokens come first, then the object slots
(so their positions do not depend on the number of slots).

Bins run 1..n. ``quantile``: equal-frequency edges fitted on the training split's
real objects, so each bin holds 1/n of them. ``cyclic``: n equal widths of
2*pi/n over [-pi, pi).
NOTE: the thesis plan writes phi bins of width pi/5, which cannot give 5 bins over
[-pi, pi) (the research code put 60% of objects in the last bin); we use 2*pi/5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.data.events import Events
from expmatrix.data.layout import GLOBAL_NAMES, N_OBJECT_TYPES
from expmatrix.spec import BinnedTokenizerConfig
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens, check_object_ids, sequence_mask


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """The n-1 inner edges that cut `values` into n equal-frequency bins."""
    return np.quantile(values, np.arange(1, n_bins) / n_bins).astype(np.float64)


def quantile_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin numbers 1..len(edges)+1; values beyond the outer edges go to the edge bins."""
    return np.searchsorted(edges, values, side="right") + 1


def cyclic_bins(angle: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin numbers 1..n over [-pi, pi) in widths 2*pi/n; angles wrap around."""
    return (np.floor((angle + np.pi) / (2 * np.pi / n_bins)).astype(np.int64) % n_bins) + 1


class JointEmbedding(nn.Module):
    """tokens (B, T) -> (B, T, d_model): one table over the joint vocabulary."""

    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.table = nn.Embedding(vocab, d_model)

    def forward(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table(tokens["tokens"]), tokens["mask"]


class BinnedTokenizer(Tokenizer):
    def __init__(self, config: BinnedTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        self.n = config.n_bins
        self.fit_on = config.fit_on
        self.globals = GLOBAL_NAMES if use_met else ()
        missing = [f for f in features + self.globals if f not in config.rules]
        if missing:
            raise TokenizerError(f"tokenizer {config.name!r}: no binning rule for features {missing}")
        self.rules = {f: config.rules[f] for f in features + self.globals}
        self.edges: dict[str, list[float]] = {}

    @property
    def n_particle_tokens(self) -> int:
        return N_OBJECT_TYPES * self.n ** len(self.features)

    @property
    def vocab_size(self) -> int:
        return self.n_particle_tokens + 2 * self.n + 1

    def _values(self, events: Events, f: str) -> np.ndarray:
        if f in self.globals:
            return events.globals_[:, self.globals.index(f)]
        return events.cont[:, :, self.features.index(f)]

    def _bins(self, values: np.ndarray, f: str) -> np.ndarray:
        if self.rules[f] == "cyclic":
            return cyclic_bins(values, self.n)
        return quantile_bins(values, np.asarray(self.edges[f]))

    def fit(self, events: Events) -> None:
        check_object_ids(events, N_OBJECT_TYPES)
        chosen = events.label == 0 if self.fit_on == "background" else np.ones(len(events), dtype=bool)
        if not chosen.any():
            raise TokenizerError(f"fit_on={self.fit_on}: the training split has no such events")
        real = events.real & chosen[:, None]
        for f in self.rules:
            if self.rules[f] == "quantile":
                v = self._values(events, f)
                v = v[chosen] if f in self.globals else v[real]
                self.edges[f] = quantile_edges(v, self.n).tolist()

    def transform(self, events: Events) -> Tokens:
        if len(self.edges) != sum(r == "quantile" for r in self.rules.values()):
            raise TokenizerError("transform before fit")
        check_object_ids(events, N_OBJECT_TYPES)
        token = (events.ids - 1) * self.n ** len(self.features)  # (N, O)
        for k, f in enumerate(self.features):
            token += (self._bins(self._values(events, f), f) - 1) * self.n ** (len(self.features) - 1 - k)
        parts = [
            (self.n_particle_tokens + k * self.n + self._bins(self._values(events, f), f))[:, None]
            for k, f in enumerate(self.globals)
        ]  # MET, then MET-phi
        tokens = np.concatenate([*parts, np.where(events.real, token + 1, 0)], axis=1).astype(np.int64)
        return {"tokens": torch.from_numpy(tokens), "mask": sequence_mask(events, len(self.globals))}

    def embedding(self, d_model: int) -> nn.Module:
        return JointEmbedding(self.vocab_size, d_model)

    def state_dict(self) -> dict[str, Any]:
        return {"rules": self.rules, "n_bins": self.n, "edges": self.edges}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["rules"] != self.rules or state["n_bins"] != self.n:
            raise TokenizerError(f"saved binning {state['rules']} x {state['n_bins']} differs from the config's")
        self.edges = {f: list(e) for f, e in state["edges"].items()}
