"""Tokens made block by block while a job reads them (`data.stream`): a split larger than memory.

`BlockTokens` stands where a job's `Tokens` of a split would: `take` gives the events asked for, tokenized from
their blocks on first use and kept for the next batches (at most `KEEP` blocks); training visits the events
in `epoch_order`, block after block, so each block is read once per epoch (a block holds at least a batch:
`data.stream.block_events` >= `train.batch_size`); evaluation runs block after block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from expmatrix.checkpoint import block_order
from expmatrix.tokenizers.base import Tokens, take
from expmatrix.tokenizers.ragged import Ragged

KEEP = 2  # blocks held at once: an epoch's batch that straddles two blocks reads both


class BlockTokens:
    """The tokens of `n` events, `size` per block: `load(b)` gives block b's tokens (events b * size ..) on the
    device. `seq_len`: token slots per event of the split (what the in-memory tokens' mask is wide); `ragged`:
    whether the blocks' tokens are `Ragged`."""

    def __init__(self, n: int, size: int, load: Callable[[int], Tokens], seq_len: int, ragged: bool):
        self.n, self.size, self.load, self.seq_len, self.ragged = n, size, load, seq_len, ragged
        self.held: OrderedDict[int, Tokens] = OrderedDict()
        self.loads = 0  # blocks read so far

    def __len__(self) -> int:
        return self.n

    @property
    def n_blocks(self) -> int:
        return -(-self.n // self.size)

    def block(self, b: int) -> Tokens:
        """Block `b`'s tokens, read now unless held; the block used longest ago is dropped beyond `KEEP`."""
        if b not in self.held:
            self.held[b] = self.load(b)
            self.loads += 1
            while len(self.held) > KEEP:
                self.held.popitem(last=False)
        self.held.move_to_end(b)
        return self.held[b]

    def take(self, idx: torch.Tensor | slice) -> Tokens:
        """The events `idx` (any order, any blocks), as `take` gives them of in-memory tokens."""
        if isinstance(idx, slice):
            idx = torch.arange(self.n)[idx]
        blocks = idx.div(self.size, rounding_mode="floor")
        present = torch.unique(blocks).tolist()
        if len(present) == 1:
            return take(self.block(present[0]), idx - present[0] * self.size)
        where = [(blocks == b).nonzero().squeeze(1) for b in present]
        parts = [take(self.block(b), idx[w] - b * self.size) for b, w in zip(present, where, strict=True)]
        back = torch.argsort(torch.cat(where).to(idx.device))  # rows of the concatenation in the order of idx
        return {k: _cat([p[k] for p in parts]).index_select(0, back.to(parts[0][k].device)) for k in parts[0]}

    def epoch_order(self, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
        return block_order(self.n, self.size, seed, epoch, device)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Batches of the same tokens from different blocks, padded (zeros) to the widest where slot counts differ
    (ragged events: each batch is as wide as its own longest event)."""
    width = max(t.shape[1] for t in tensors) if tensors[0].dim() >= 2 else None
    if width is not None and any(t.shape[1] != width for t in tensors):
        tensors = [torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1])) for t in tensors]
    return torch.cat(tensors)


def holds_ragged(tokens: Tokens | BlockTokens) -> bool:
    """Whether batches of `tokens` are as wide as their own longest event (ragged events), not one width."""
    return tokens.ragged if isinstance(tokens, BlockTokens) else isinstance(tokens["mask"], Ragged)
