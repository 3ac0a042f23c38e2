"""Joint (Ambre) binning: one integer token per object from its type and binned features.

For the 4-vector (pT, eta, phi) with 5 bins and 7 object types this is exactly
``125*(obj-1) + 25*(bin_pT-1) + 5*(bin_eta-1) + bin_phi`` in [1, 875]; in general a
mixed-radix number over the selected features in their order (n_f bins each), with the
object type as the most significant digit:

    token = 1 + (obj-1) * prod(n) + sum_f (bin_f - 1) * prod(n_g for g after f)   in [1, 7 * prod(n)]

MET tokens follow the particle range (``7*prod(n) + bin_MET``: 876..880 for the 4-vector),
then MET-phi tokens (``7*prod(n) + n_MET + bin_MET_phi``: 881..885); padding is 0, so the
vocabulary is ``7*prod(n) + n_MET + n_MET_phi + 1``: 886 for the 4-vector with 5 bins,
4386 for the 5-vector (E is binned too, the most significant feature digit), 876 and 4376
without MET. In the model's sequence the MET and MET-phi tokens come first, then the object
slots (so their positions do not depend on the number of slots); `data bin` writes the
thesis column order (objects, then MET, MET-phi).

Bins: see `binning.py` (quantile edges from the training split's real entries, each bin
holding 1/n of them; phi cyclic over [-pi, pi) in widths 2*pi/n).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from expmatrix.config import BinnedTokenizerConfig
from expmatrix.config.layout import N_OBJECT_TYPES
from expmatrix.config.tokenizers.binned import BinningFields
from expmatrix.data.events import Events
from expmatrix.tokenizers import native
from expmatrix.tokenizers.base import (
    Tokenizer,
    TokenizerError,
    Tokens,
    check_events,
    check_object_ids,
    missing_features,
)
from expmatrix.tokenizers.binning import Binner, BinRule, check_finite
from expmatrix.tokenizers.parallel import chunks, parallel_map
from expmatrix.tokenizers.quantiles import all_finite

CHUNK_EVENTS = 8192  # events tokenized at once: their columns stay in cache


class BinnedBase(Tokenizer):
    """Resolves the bin rules of the selected features (and MET when used) in __init__; fits and saves them."""

    def __init__(self, config: BinningFields, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        rules = config.rules
        missing_features(rules, features + self.globals, config.name, "binning rule")
        resolved = {}
        for f in features + self.globals:
            rule = rules[f]
            resolved[f] = BinRule.from_config(rule, rule.bins if rule.bins is not None else config.n_bins)
        self.binner = Binner(resolved, features, self.globals)
        per_type = config.per_object_type
        if per_type and not set(self.binner.quantile) & set(features):
            raise TokenizerError(f"tokenizer {config.name!r}: per_object_type has no effect: no quantile feature")
        if self.binner.quantile:  # where the edges come from matters only when there are edges to fit
            self.binner.set_fit_options(config.fit_on, per_type)
        self.n = [self.binner.rules[f].bins for f in features]  # bins per object feature
        self.n_particle_tokens = N_OBJECT_TYPES * int(np.prod(self.n))

    def _check(self, events: Events, need_fit: bool = True, ids: bool = True) -> None:
        if need_fit and not self.binner.fitted:
            raise TokenizerError("transform before fit")
        check_events(events, self.features, self.use_met, ids=ids)

    def _kernel(self, events: Events) -> tuple[Any, np.ndarray, np.ndarray] | None:
        """The compiled kernels and C-ordered ids and features, when they can bin these events (else numpy)."""
        so = native.lib()
        floats = [events.cont] + ([] if events.globals_ is None else [events.globals_])
        if so is None or events.ids.dtype != np.int64 or any(a.dtype != np.float32 for a in floats):
            return None  # other dtypes would be binned at another precision than the numpy path's
        if len(self.features) > native.MAX_FEATURES:
            return None
        return so, np.ascontiguousarray(events.ids), np.ascontiguousarray(events.cont)

    def _run_kernel(self, events: Events, names: tuple[str, ...], call: Callable[[slice, int], int]) -> None:
        """`call(chunk, counts)` on chunks of events on parallel threads: it returns the chunk's invalid ids and
        writes the out-of-range and NaN/inf counts (len(names), 2) of features `names` at address `counts`;
        invalid ids raise, then NaN/inf (the features in order), else the counts are added to the binner's."""
        parts = chunks(len(events), CHUNK_EVENTS)
        counts = np.zeros((len(parts), len(names), 2), np.int64)
        at = native.rows(counts)
        bad = parallel_map(lambda i: call(parts[i], at(i)), range(len(parts)))
        if min(bad, default=0) < 0:
            raise MemoryError("the binning kernel could not allocate its buffers")
        if any(bad):
            check_object_ids(events, N_OBJECT_TYPES)  # raises, naming them
        self.binner.add_counts(names, counts.sum(axis=0))

    def fit(self, events: Events) -> None:
        self._check(events, need_fit=False)
        self.binner.fit(events)

    def fit_stream(self, chunks: Callable[[], Iterable[Events]], expected: int) -> None:
        """Fit from chunks of the training split (memory-bounded; `chunks()` is called at least twice)."""
        self.binner.fit_stream(lambda: (self._checked(ev) for ev in chunks()), expected)

    def _checked(self, events: Events) -> Events:
        self._check(events, need_fit=False)
        return events

    def global_codes(self, events: Events) -> list[np.ndarray]:
        """(N,) bin codes 0..n-1 of MET, then MET-phi."""
        return [self.binner.codes(f, events.globals_[:, i]) for i, f in enumerate(self.globals)]

    def object_codes(self, ids: np.ndarray, cont: np.ndarray, real: np.ndarray) -> list[np.ndarray]:
        """(m, O) bin codes 0..n-1 of each object feature."""
        return [self.binner.codes(f, cont[:, :, k], ids, real) for k, f in enumerate(self.features)]

    def state_dict(self) -> dict[str, Any]:
        return self.binner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.binner.load_state_dict(state)


class JointEmbedding(nn.Module):
    """tokens (B, T) -> (B, T, d_model): one table over the joint vocabulary."""

    def __init__(self, vocab: int, d_model: int):
        super().__init__()
        self.table = nn.Embedding(vocab, d_model)

    def forward(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table(tokens["tokens"]), tokens["mask"]


class BinnedTokenizer(BinnedBase):
    def __init__(self, config: BinnedTokenizerConfig, features: tuple[str, ...], use_met: bool):
        super().__init__(config, features, use_met)
        radix = np.cumprod([1, *self.n[::-1]])[::-1]  # place value of obj, then of each feature
        self.radix = [int(r) for r in radix]
        small = self.radix[0] <= 1 << 16 and max(self.n) <= 255  # codes are uint8 up to 255 bins
        self.digit_dtype = np.uint16 if small else np.int64
        self.token_dtype = np.int32 if self.n_particle_tokens < 1 << 30 else np.int64  # embeddings take int32
        offsets = np.cumsum([0] + [self.binner.rules[f].bins for f in self.globals])
        self.global_offsets = [self.n_particle_tokens + int(o) for o in offsets[:-1]]
        self.vocab_size = self.n_particle_tokens + int(offsets[-1]) + 1

    def object_tokens(self, ids: np.ndarray, cont: np.ndarray, out=None, real=None) -> np.ndarray:
        """(m, O) joint tokens, 0 at empty slots; written into `out` (and the real-slot mask into `real`) if given."""
        codes = self.object_codes(ids, cont, np.greater(ids, 0, out=real))
        digits = codes[0].astype(self.digit_dtype)
        for code, n in zip(codes[1:], self.n[1:], strict=True):  # Horner: the features' mixed-radix number
            digits *= n
            digits += code
        token = ids.astype(self.token_dtype)
        token *= self.radix[0]
        token += digits
        token += 1 - self.radix[0]  # 1 + (type - 1) * radix + digits; <= 0 at empty slots (type 0)
        return np.maximum(token, 0, out=token if out is None else out)

    def thesis_rows(self, events: Events) -> np.ndarray:
        """(N, O + G) in the thesis file order: object tokens, then MET and MET-phi tokens."""
        return self._tokens(events, globals_first=False)[0]

    def _tokens(self, events: Events, globals_first: bool) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (N, G + O) and the mask of real tokens, chunks of events on parallel threads."""
        kernel = self._kernel(events) if self.token_dtype is np.int32 else None
        self._check(events, ids=kernel is None)
        self.out_of_range = self.binner.reset_counts()
        n, g, o = len(events), len(self.globals), events.ids.shape[1]
        out, mask = np.empty((n, g + o), self.token_dtype), np.empty((n, g + o), bool)
        obj, glob = (slice(g, None), slice(0, g)) if globals_first else (slice(0, o), slice(o, None))
        if kernel is None:
            self._numpy_tokens(events, out[:, obj], mask[:, obj], out[:, glob], mask[:, glob])
        else:  # the kernel writes every column, row by row: objects, then MET and MET-phi
            so, ids, cont = kernel
            table, _edges = self.binner.native_table(self.features, self.radix[1:])
            gtable, _gedges = self.binner.native_table(self.globals, [1] * g, [o + 1 for o in self.global_offsets])
            met = np.ascontiguousarray(events.globals_ if g else np.zeros((n, 0)), dtype=np.float32)
            at_ids, at_cont, at_out, at_mask, at_met = map(native.rows, (ids, cont, out, mask, met))
            self._run_kernel(events, self.features + self.globals, lambda s, counts: so.joint_tokens(
                s.stop - s.start, o, at_ids(s.start), at_cont(s.start), cont.shape[2], len(self.features), table,
                self.radix[0], at_out(s.start), at_mask(s.start), g + o, obj.start, at_met(s.start), g, gtable,
                glob.start, counts))  # fmt: skip
        return out, mask

    def _numpy_tokens(self, events: Events, out: np.ndarray, mask: np.ndarray, met: np.ndarray,
                      met_mask: np.ndarray) -> None:  # fmt: skip
        """The reference path: object tokens by chunks, then MET and MET-phi (errors in the kernel's order)."""
        if not all_finite(events.cont):  # NaN/inf counted over all chunks, as the kernels count them
            for k, f in enumerate(self.features):
                check_finite(events.cont[:, :, k], events.real, f)
        parallel_map(lambda s: self.object_tokens(events.ids[s], events.cont[s], out[s], mask[s]),
                     chunks(len(events), CHUNK_EVENTS))  # fmt: skip
        for k, code in enumerate(self.global_codes(events)):
            met[:, k] = code
            met[:, k] += self.global_offsets[k] + 1
        met_mask[:] = True

    def transform(self, events: Events) -> Tokens:
        tokens, mask = self._tokens(events, globals_first=True)  # the mask is `sequence_mask`'s, made per chunk
        return {"tokens": torch.from_numpy(tokens), "mask": torch.from_numpy(mask)}

    def embedding(self, d_model: int) -> nn.Module:
        return JointEmbedding(self.vocab_size, d_model)

    def decode(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Particle tokens (1..7*prod(n)) -> object type and bin numbers (1..n) per feature; 0 elsewhere."""
        particle = (tokens >= 1) & (tokens <= self.n_particle_tokens)
        t = np.where(particle, tokens - 1, 0)
        out = {"type": np.where(particle, t // self.radix[0] + 1, 0)}
        for f, r, n in zip(self.features, self.radix[1:], self.n, strict=True):
            out[f] = np.where(particle, (t // r) % n + 1, 0)
        return out
