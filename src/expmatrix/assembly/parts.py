"""One job's parts, made once and handed on: its splits, fitted tokenizer, tokens, solved width and model.

Training (`training/job.py`), pretraining and fine-tuning (`pretraining/`) and export (`onnx_export.py`) take
the parts of a job from an `Assembly`; none of them derives a part again. Each part is made on first use, so a
pretraining stage that needs only the fitted tokenizer and the width reads none of the job's splits.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property

import torch
from torch import nn

from expmatrix.assembly.fits import fitted_tokenizer
from expmatrix.assembly.recipe import Recipe
from expmatrix.config import Job, JobConfig, n_outputs
from expmatrix.data import Events, StreamedSplit, load_pulse_splits, load_splits
from expmatrix.models.sizing import Size, build_model, solve_size
from expmatrix.store import RunStore
from expmatrix.tokenizers import Tokenizer, Tokens
from expmatrix.tokenizers.base import to_device
from expmatrix.tokenizers.blocks import BlockTokens
from expmatrix.tokenizers.ragged import ragged_tokens

TRANSFORM_SLOTS = 1 << 22  # ragged events: padded slots per tokenizer transform (events x the chunk's longest)


def sensor_tokens(events: Events) -> Tokens:
    """`sensor` (N, P) ids and `sensor_xyz` (N, P, 3) m of every pulse slot, where the events carry them."""
    if events.sensors is None:
        return {}
    sensors = torch.from_numpy(events.sensors)
    return {"sensor": sensors[..., 0].to(torch.int32), "sensor_xyz": sensors[..., 1:].contiguous()}


def fit_view(events: Events) -> Events:
    """What a tokenizer fits on: objects as their events hold them; pulses (events with a `length`), padded or
    ragged, as their pulse view, so that a fit sees the same rows whatever the layout (one cached fit serves
    the flat and the hierarchical model)."""
    return events if events.length is None else events.pulse_view()


def event_tokens(tokenizer: Tokenizer, events: Events) -> Tokens:
    """The tokenizer's tokens of `events` and their sensors; ragged events give `Ragged` tensors, transformed
    in padded chunks of at most `TRANSFORM_SLOTS` slots, their clipped entries counted over all chunks."""
    if events.offsets is None:
        return tokenizer.transform(events) | sensor_tokens(events)
    clipped = Counter()

    def chunks():
        for rows in events.padded_chunks(TRANSFORM_SLOTS):
            chunk = events.padded(rows)
            yield tokenizer.transform(chunk) | sensor_tokens(chunk)
            clipped.update(tokenizer.out_of_range)

    tokens = ragged_tokens(chunks())
    tokenizer.out_of_range = dict(clipped)
    return tokens


class Assembly:
    """The parts of `job` for `store`'s runs on `device`. `tokenizer`: an already fitted one (the job's own
    record, for export) in place of the shared fit."""

    def __init__(
        self, job: Job, store: RunStore, device: torch.device | str = "cpu", tokenizer: Tokenizer | None = None
    ):
        self.job, self.store, self.device = job, store, torch.device(device)
        self.recipe = Recipe.of(job)
        self.outputs = n_outputs(job.config.data)  # 2 class logits, or a 3-vector: the loss gives them their meaning
        if tokenizer is not None:
            self.tokenizer = tokenizer  # (an instance attribute hides the cached property)

    @property
    def cfg(self) -> JobConfig:
        return self.job.config

    @cached_property
    def splits(self) -> dict[str, Events | StreamedSplit]:
        """train/val/test `Events` of the job's source with the features its tokenizer reads (`StreamedSplit`s
        with `data.stream`)."""
        cfg, cache = self.cfg, self.store.paths.cache.dir
        if cfg.data.source == "fourtops":
            return load_splits(cfg.data, self.job.data_path, cache)
        hierarchical = cfg.model.kind == "hierarchical"  # it groups pulses by sensor and places them: ragged
        return load_pulse_splits(cfg.data, self.job.data_path, cache, self.recipe.features, sensors=hierarchical)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """Fitted on the training split (streamed: its first `data.stream.fit_events` events) once per fit key,
        shared through the cache."""
        files = self.store.paths.cache.fit(self.recipe.fit_key)
        return fitted_tokenizer(self.recipe, files, lambda: fit_view(self._fit_events()))

    def _fit_events(self) -> Events:
        """The training split, or of a streamed one its first `data.stream.fit_events` events."""
        train = self.splits["train"]
        return train.head(self.cfg.data.stream.fit_events) if isinstance(train, StreamedSplit) else train

    @cached_property
    def tokens(self) -> dict[str, Tokens | BlockTokens]:
        """The tokenizer's tokens of every split (and, for the hierarchical model, each pulse's sensor); of a
        streamed split, made block by block as training reads them."""
        return {s: self._tokens_of(ev) for s, ev in self.splits.items()}

    def _tokens_of(self, events: Events | StreamedSplit) -> Tokens | BlockTokens:
        if isinstance(events, Events):
            return to_device(event_tokens(self.tokenizer, events), self.device)
        tokenizer, device = self.tokenizer, self.device

        def load(b: int) -> Tokens:
            return to_device(event_tokens(tokenizer, events.block(b)), device)

        return BlockTokens(len(events), events.block_events, load, events.slots, events.ragged)

    @cached_property
    def targets(self) -> dict[str, torch.Tensor]:
        """Class labels, or the regression target (the direction) where the source has one."""
        return {
            s: torch.from_numpy(ev.label if ev.target is None else ev.target).to(self.device)
            for s, ev in self.splits.items()
        }

    @property
    def seq_len(self) -> int:
        """Tokens per event (object slots and global tokens)."""
        train = self.tokens["train"]
        return train.seq_len if isinstance(train, BlockTokens) else train["mask"].shape[1]

    def size_for(self, seq_len: int) -> Size:
        """The width that meets the parameter budget for sequences of `seq_len` tokens (learned positions count)."""
        return solve_size(self.tokenizer, self.cfg.model, self.outputs, seq_len)

    @cached_property
    def size(self) -> Size:
        return self.size_for(self.seq_len)

    def model(self, size: Size | None = None, seq_len: int | None = None) -> nn.Module:
        """A new model of the job (its weights drawn from torch's generator as it stands)."""
        return build_model(self.tokenizer, self.cfg.model, size or self.size, self.outputs, seq_len or self.seq_len)
