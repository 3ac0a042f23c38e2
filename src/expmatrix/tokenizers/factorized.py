"""Factorized binning: the joint tokenizer's bins, but one integer per feature, each with its own table.

Per object slot the codes are ``[type, bin_f1, bin_f2, ...]`` (type 1..7, bins 1..n_f, 0 at
empty slots); per event ``[bin_MET, bin_MET_phi]``. The object parts are embedded in
separate tables (8 and n_f + 1 rows: a few dozen instead of the joint 7*prod(n)) and summed,
or concatenated and projected; MET and MET-phi get a table each and form the first tokens.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from expmatrix.config import FactorizedTokenizerConfig
from expmatrix.config.layout import N_OBJECT_TYPES
from expmatrix.data.events import Events
from expmatrix.tokenizers import native
from expmatrix.tokenizers.base import Tokens, sequence_mask
from expmatrix.tokenizers.binned import BinnedBase
from expmatrix.tokenizers.embeddings import TableEmbedding


class FactorizedTokenizer(BinnedBase):
    def __init__(self, config: FactorizedTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        self.combine = config.combine
        self.part_vocabs = [N_OBJECT_TYPES + 1] + [n + 1 for n in self.n]  # 0 = padding
        self.global_vocabs = [self.binner.rules[f].bins + 1 for f in self.globals]

    def transform(self, events: Events) -> Tokens:
        kernel = self._kernel(events)
        self._check(events, ids=kernel is None)
        self.out_of_range = self.binner.reset_counts()
        if kernel is None:
            real = events.real
            bins = [(c.astype(np.int64) + 1) * real for c in self.object_codes(events.ids, events.cont, real)]
            codes = np.stack([events.ids, *bins], axis=-1)
        else:
            so, ids, cont = kernel
            table, _edges = self.binner.native_table(self.features, [0] * len(self.features))
            codes = np.empty((*ids.shape, 1 + len(self.features)), np.int64)
            at_ids, at_cont, at_codes = map(native.rows, (ids, cont, codes))
            self._run_kernel(events, self.features, lambda s, counts: so.factorized_codes(
                s.stop - s.start, ids.shape[1], at_ids(s.start), at_cont(s.start), cont.shape[2],
                len(self.features), table, at_codes(s.start), counts))  # fmt: skip
        out = {"codes": torch.from_numpy(codes), "mask": sequence_mask(events, len(self.globals))}
        if self.globals:
            out["g"] = torch.from_numpy(np.stack([c.astype(np.int64) + 1 for c in self.global_codes(events)], axis=1))
        return out

    def vocabularies(self) -> dict[str, int]:
        """Rows of each embedding table, by part."""
        return dict(
            zip(("object type", *self.features, *self.globals), self.part_vocabs + self.global_vocabs, strict=True)
        )

    def embedding(self, d_model: int) -> nn.Module:
        return TableEmbedding(self.part_vocabs, self.global_vocabs, d_model, self.combine)
