"""The interface every tokenizer implements.

A tokenizer turns an `Events` table into tensors (`Tokens`), and owns the input
layer that maps those tensors to `(B, T, d_model)` plus the padding mask.
It is fitted on the training split only, on real (non-padded) entries only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from expmatrix.config import fit_signature
from expmatrix.config.layout import GLOBAL_NAMES, N_OBJECT_TYPES
from expmatrix.data.events import Events
from expmatrix.tokenizers.errors import TokenizerError
from expmatrix.tokenizers.parallel import chunks, parallel_map

Tokens = dict[str, torch.Tensor]  # every tensor has the events on dim 0; "mask" is (N, T) bool, True = real


def take(tokens: Tokens, idx: torch.Tensor | slice) -> Tokens:
    """The events `idx` of every tensor (of tokens made block by block: their own `take`)."""
    if not isinstance(tokens, dict):
        return tokens.take(idx)
    return {k: v[idx] for k, v in tokens.items()}


def to_device(tokens: Tokens, device: torch.device) -> Tokens:
    return {k: v.to(device) for k, v in tokens.items()}


class Tokenizer(ABC):
    """fit -> transform -> embedding; fitted state round-trips through `state_dict`."""

    def __init__(self, config: BaseModel, features: tuple[str, ...], use_met: bool):
        self.config = config
        self.features = features  # the continuous features selected by the job, in order
        self.use_met = use_met
        self.globals: tuple[str, ...] = GLOBAL_NAMES if use_met else ()  # MET, MET-phi: their own tokens
        self.out_of_range: dict[str, int] = {}  # entries the last transform put in edge bins / clipped, per feature

    def signature(self) -> str:
        """Everything that shapes the input layer (a cache key for model sizing)."""
        return fit_signature(self.config, self.features, self.use_met)

    def summary(self) -> dict[str, float]:
        """What the fitted tokenizer reports beside a job's metrics (`metrics.json` `codebook`): a codebook's health."""
        return {}

    @abstractmethod
    def fit(self, events: Events) -> None:
        """Learn constants from the training split."""

    @abstractmethod
    def transform(self, events: Events) -> Tokens:
        """Vectorized encoding of all events."""

    @abstractmethod
    def embedding(self, d_model: int) -> nn.Module:
        """A module: `Tokens` of a batch -> ((B, T, d_model) float, (B, T) bool mask)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Fitted state as JSON-able data."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def check_object_ids(events: Events, n_types: int) -> None:
    """Object-type ids must be integers in 0..n_types (0 = empty slot)."""
    ids = events.ids
    if not ids.size:
        return
    low, high = zip(*parallel_map(lambda s: (ids[s].min(), ids[s].max()), chunks(len(ids), 1 << 15)), strict=True)
    if min(low) < 0 or max(high) > n_types:
        bad = (ids < 0) | (ids > n_types)
        raise TokenizerError(f"object-type ids outside 0..{n_types}: {np.unique(events.ids[bad])[:10].tolist()}")


def check_events(
    events: Events, features: tuple[str, ...], use_met: bool, n_types: int = N_OBJECT_TYPES, ids: bool = True
) -> None:
    """The events carry the features (and globals) the tokenizer was built for, and valid object-type ids
    (`ids=False`: the caller's kernel checks them)."""
    if tuple(events.feature_names) != tuple(features):
        raise TokenizerError(f"events carry features {events.feature_names}; the tokenizer was built for {features}")
    if use_met and events.globals_ is None:
        raise TokenizerError("the tokenizer uses MET but the events carry no globals")
    if ids:
        check_object_ids(events, n_types)


def feature_values(events: Events, f: str, features: tuple[str, ...], globals_: tuple[str, ...]):
    """Values of feature `f` and where they are real: an object feature (N, O), a global (N,)."""
    if f in globals_:
        return events.globals_[:, globals_.index(f)], np.ones(len(events), dtype=bool)
    return events.cont[:, :, features.index(f)], events.real


def missing_features(rules: dict, names: tuple[str, ...], config_name: str, what: str) -> None:
    """A preset must declare a rule for every feature the job selects."""
    missing = [f for f in names if f not in rules]
    if missing:
        raise TokenizerError(f"tokenizer {config_name!r}: no {what} for features {missing}; it declares {list(rules)}")


def sequence_mask(events: Events, n_global_tokens: int) -> torch.Tensor:
    """(N, G + O) bool: the always-present global tokens, then the real objects.

    Global tokens come first so that their positions do not depend on how many
    object slots the file has: appending empty slots changes nothing.
    """
    mask = torch.from_numpy(events.real)
    return torch.cat([torch.ones(len(events), n_global_tokens, dtype=torch.bool), mask], dim=1)
