"""Token layouts: padded `(B, T, C)`, packed `(N_real, C)`, and length buckets for attention.

Everything in a block but attention acts on each token alone, and the outputs at padded
slots are never used (they are masked as keys and excluded by pooling). Packing the real
tokens skips that dead work: the 4-top events fill about half of their 18 object slots.
Attention needs rectangles: the events are sorted by length and cut into `BUCKETS` groups,
each padded only to its own longest event, so attention also works on few padded rows
(on CPU its cost grows with the number of query rows). Sequences whose lengths span orders of
magnitude (the pulses of IceCube sensors: most hold one, a few hundreds) are grouped by
`geometric` buckets instead, one per power of two of the length: at most half of a row is padding.
"""

from __future__ import annotations

import torch

BUCKETS = 4  # attention groups per batch in the packed layout


class Packing:
    """Which slots of a batch are real, and how token tensors move between layouts.

    Shape:
        mask: (B, T) bool, True = real. `packed=False` keeps all B*T slots as one bucket
        (static shapes, as torch.compile and CUDA graphs like them); the results are the same.
        positions: (N,) slot index of every token (for rotary embeddings).
    """

    def __init__(self, mask: torch.Tensor, packed: bool, buckets: int = BUCKETS, geometric: bool = False):
        B, T = self.shape = mask.shape
        slots = torch.arange(T, device=mask.device)
        if not packed:
            self.idx = None
            self.positions = slots.repeat(B)
            self.buckets = [(B, T, mask[:, None, None, :])]  # (events, length, key mask (B, 1, 1, L))
            return
        lengths = mask.sum(1)
        if not lengths.all():
            raise ValueError(f"{int((lengths == 0).sum())} events of the batch have no real token to attend to")
        self.idx = mask.flatten().nonzero().squeeze(1)  # (N,) packed tokens, event-major
        self.positions = self.idx % T
        self._bucket(lengths, buckets, geometric)

    @classmethod
    def of_lengths(cls, lengths: torch.Tensor) -> Packing:
        """Sequences already packed one after the other (N = lengths.sum() tokens), in geometric buckets.

        Shape: lengths (S,) >= 1; `pad` then gives (S, max(lengths), C)."""
        first = torch.cumsum(lengths, 0) - lengths
        seq = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
        self = cls.__new__(cls)
        T = int(lengths.max())
        self.shape = torch.Size((len(lengths), T))
        self.positions = torch.arange(len(seq), device=lengths.device) - first[seq]  # (N,) rank in its sequence
        self.idx = seq * T + self.positions
        self._bucket(lengths, 0, True)
        return self

    def _bucket(self, lengths: torch.Tensor, n_buckets: int, geometric: bool = False) -> None:
        """Gather index into packed tokens for the bucket rows, and the way back.

        Padded rows repeat token 0: as keys they are masked, as queries their outputs are dropped,
        so they neither change a result nor receive a gradient."""
        starts = torch.cumsum(lengths, 0) - lengths  # first packed token of each event
        order = torch.argsort(lengths, stable=True)
        if geometric:  # one bucket per bit length of the length: 1, 2, 3-4, 5-8, ...
            bits = torch.bincount(torch.ceil(torch.log2(lengths[order].double())).long())
            groups = torch.split(order, [int(b) for b in bits if b > 0])
        else:
            groups = torch.tensor_split(order, min(n_buckets, len(order)))
        self.buckets, gather, real_rows = [], [], []
        for events in groups:
            length = int(lengths[events[-1]])  # sorted: the last is the longest
            j = torch.arange(length, device=lengths.device)
            real = j < lengths[events, None]  # (B_k, L_k)
            gather.append(torch.where(real, starts[events, None] + j, 0).flatten())
            real_rows.append(real.flatten())
            self.buckets.append((len(events), length, real[:, None, None, :]))
        self.gather = torch.cat(gather)  # (R,) rows of all buckets
        rows = torch.cat(real_rows).nonzero().squeeze(1)
        self.back = torch.empty_like(self.idx).index_copy_(0, self.gather[rows], rows)  # (N,) token -> its row

    def unpad(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C) with N the real tokens (or all B*T)."""
        flat = h.reshape(-1, h.shape[-1])
        return flat if self.idx is None else flat.index_select(0, self.idx)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C), zeros at padded slots."""
        if self.idx is not None:
            x = x.new_zeros(self.shape.numel(), x.shape[-1]).index_copy(0, self.idx, x)
        return x.view(*self.shape, x.shape[-1])

    def to_buckets(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C) -> [(B_k * L_k, C)] rows of the rectangles for attention."""
        if self.idx is None:
            return [x.view(*self.shape, x.shape[-1])]
        return list(x.index_select(0, self.gather).split([b * n for b, n, _ in self.buckets]))  # viewed by the caller

    def from_buckets(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """[(B_k, L_k, C)] -> (N, C)."""
        flat = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])
        return flat if self.idx is None else flat.index_select(0, self.back)
