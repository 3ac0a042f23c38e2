"""Tokens of ragged events: each tensor holds every pulse's tokens one event after the other, plus offsets.

A tokenizer transforms ragged events in chunks of padded events (bounded in memory), so its tokens are the
padded table's at every real slot, whatever the tokenizer reads of an event (the integer tokenizer's time
after the event's first pulse, say). `ragged_tokens` keeps their real slots as `Ragged`
tensors, which index like the padded ones (`take`, `to_device`, `len`, `.shape`, `.device`): indexing events
gives the padded batch, (B, the batch's longest event, ...), zeros (mask False) after each event's tokens.
Memory holds the pulses themselves, not events x the longest event.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from expmatrix.data.events import slot_batches
from expmatrix.tokenizers.base import Tokens
from expmatrix.tokenizers.errors import TokenizerError


class Ragged:
    """`values` (M, ...) of N events, event i in rows offsets[i] .. offsets[i + 1] - 1 (offsets (N + 1,))."""

    def __init__(self, values: torch.Tensor, offsets: torch.Tensor):
        self.values, self.offsets = values, offsets.to(device=values.device, dtype=torch.int64)
        self.lengths = self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def shape(self) -> torch.Size:
        """As if padded: (N, the longest event, ...)."""
        return torch.Size((len(self), int(self.lengths.max()), *self.values.shape[1:]))

    def to(self, device: torch.device | str) -> Ragged:
        return Ragged(self.values.to(device), self.offsets.to(device))

    def __getitem__(self, idx: torch.Tensor | slice) -> torch.Tensor:
        """The events `idx` padded to their longest: (B, T, ...)."""
        if isinstance(idx, slice):
            idx = torch.arange(len(self), device=self.device)[idx]
        starts, lengths = self.offsets[idx], self.lengths[idx]
        slots = torch.arange(int(lengths.max()) if len(idx) else 0, device=self.device)
        real = slots[None, :] < lengths[:, None]
        out = self.values.new_zeros((len(idx), len(slots), *self.values.shape[1:]))
        out[real] = self.values[(starts[:, None] + slots[None, :])[real]]
        return out

    def batches(self, max_events: int, max_slots: int) -> list[slice]:
        """Consecutive events in slices of at most `max_events`, each padded batch within `max_slots` slots
        (B x its longest event; an event longer than that alone): evaluation in bounded memory."""
        return slot_batches(self.lengths.tolist(), max_events, max_slots)


def ragged_tokens(chunks: Iterable[Tokens]) -> Tokens:
    """The tokens of consecutive chunks of padded events as `Ragged` tensors: every tensor's real slots (those
    of its chunk's `mask`), one event after the other. Each chunk is reduced to its real slots as it comes, so
    memory holds one padded chunk at a time."""
    parts: dict[str, list[torch.Tensor]] = {}
    lengths = []
    for chunk in chunks:
        mask = chunk["mask"]
        for name, value in chunk.items():
            if value.shape[:2] != mask.shape:
                raise TokenizerError(
                    f"token {name!r} has shape {tuple(value.shape)} for a mask of {tuple(mask.shape)}: ragged "
                    "events need tokens per slot (a tokenizer with per-event tokens, such as MET, reads padded events)"
                )
            parts.setdefault(name, []).append(value[mask])
        lengths.append(mask.sum(1))
    counts = torch.cat(lengths)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return {name: Ragged(torch.cat(values), offsets) for name, values in parts.items()}
