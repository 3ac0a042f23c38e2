"""The shared shape of the code tokenizers (`kmeans`, `fsq`, `vqvae`): one code per real object.

The object features are normalized as the `direct` tokenizer does (the same transforms, fitted on
the training split's real objects); a subclass learns a quantizer on them (`fit_codes`) and maps
objects to codes 0..n_codes-1 (`codes`). MET and MET-phi become one bin token each, as in the
joint binning. The input layer sums a code embedding and, optionally, an object-type embedding.

Shape of the tokens:
    codes: (N, O, 1 or 2) int64: code + 1 [, object type], 0 at empty slots
    g:     (N, 2) int64: MET bin + 1, MET-phi bin + 1 (only with MET)
    mask:  (N, [2 +] O) bool
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.config import CodeFields, DirectTokenizerConfig
from expmatrix.config.layout import N_OBJECT_TYPES
from expmatrix.config.tokenizers.binned import CyclicBins, QuantileBins
from expmatrix.data.events import Events
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens, check_events, sequence_mask
from expmatrix.tokenizers.binning import Binner, BinRule
from expmatrix.tokenizers.direct import DirectTokenizer
from expmatrix.tokenizers.embeddings import TableEmbedding
from expmatrix.tokenizers.parallel import chunks

CHUNK_EVENTS = 1 << 14  # events encoded at once: bounds the memory of a transform


class CodeTokenizer(Tokenizer):
    """Normalization, MET bins, tokens and the input layer; subclasses own the quantizer."""

    n_codes: int  # the codebook size, set by the subclass's __init__

    def __init__(self, config: CodeFields, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        transforms = {f: t for f, t in config.transforms.items() if f in features}
        direct = DirectTokenizerConfig(kind="direct", name=config.name, transforms=transforms, object_type=False)
        self.normalizer = DirectTokenizer(direct, features, use_met=False)  # names a missing transform
        met = BinRule.from_config(QuantileBins(kind="quantile"), config.met_bins)
        met_phi = BinRule.from_config(CyclicBins(kind="cyclic"), config.met_bins)
        self.binner = Binner({"MET": met, "MET_phi": met_phi}, (), self.globals)
        self.met_bins = config.met_bins
        self.object_type = config.object_type
        self.seed = config.seed

    # ------------------------------------------------------------ the quantizer (subclasses)

    @abstractmethod
    def fit_codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> None:
        """Learn the quantizer from the training split: x (N, O, F) normalized, ids and real (N, O)."""

    @abstractmethod
    def codes(self, x: np.ndarray, ids: np.ndarray, real: np.ndarray) -> np.ndarray:
        """(N, O) int64 codes 0..n_codes-1 (any value at empty slots: the caller zeroes them)."""

    @abstractmethod
    def quantizer_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_quantizer_state(self, state: dict[str, Any]) -> None: ...

    @property
    @abstractmethod
    def fitted(self) -> bool: ...

    # ------------------------------------------------------------ the interface

    def normalized(self, events: Events) -> np.ndarray:
        """(N, O, F) float32 normalized object features, 0 at empty slots."""
        return self.normalizer.encode(events, self.features)

    def fit(self, events: Events) -> None:
        check_events(events, self.features, self.use_met)
        self.normalizer.fit(events)
        if self.use_met:
            self.binner.fit(events)
        self.fit_codes(self.normalized(events), events.ids, events.real)

    def transform(self, events: Events) -> Tokens:
        if not self.fitted:
            raise TokenizerError("transform before fit")
        check_events(events, self.features, self.use_met)
        n, o = events.ids.shape
        out = np.zeros((n, o, 1 + self.object_type), np.int64)
        for part in chunks(n, CHUNK_EVENTS):
            ev = events.rows(part)
            out[part, :, 0] = np.where(ev.real, self.codes(self.normalized(ev), ev.ids, ev.real) + 1, 0)
        if self.object_type:
            out[..., 1] = np.where(events.real, events.ids, 0)
        tokens = {"codes": torch.from_numpy(out), "mask": sequence_mask(events, len(self.globals))}
        if self.use_met:
            g = [self.binner.codes(f, events.globals_[:, i]).astype(np.int64) + 1 for i, f in enumerate(self.globals)]
            tokens["g"] = torch.from_numpy(np.stack(g, axis=1))
        return tokens

    def code_table(self, d_model: int) -> nn.Module | None:
        """A subclass's own code table (e.g. initialised from its codebook); None: a fresh nn.Embedding."""
        return None

    def embedding(self, d_model: int) -> nn.Module:
        parts = [self.n_codes + 1] + ([N_OBJECT_TYPES + 1] if self.object_type else [])
        module = TableEmbedding(parts, [self.met_bins + 1] * len(self.globals), d_model, "sum")
        table = self.code_table(d_model)
        if table is not None:
            module.parts[0] = table
        return module

    def state_dict(self) -> dict[str, Any]:
        met = self.binner.state_dict() if self.use_met else None
        return {"normalizer": self.normalizer.state_dict(), "met": met, "quantizer": self.quantizer_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.normalizer.load_state_dict(state["normalizer"])
        if self.use_met:
            self.binner.load_state_dict(state["met"])
        self.load_quantizer_state(state["quantizer"])
