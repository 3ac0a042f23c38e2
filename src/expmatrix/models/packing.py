"""Padded (B, T, C) <-> packed (N_real, C) token layouts.

Everything in a block but attention acts on each token alone, and the outputs at
padded slots are never used (they are masked as keys and excluded by pooling).
Packing the real tokens skips that dead work: the synthetic and real 4-top events
fill about half of their 18 object slots, so the linear layers do about half the
FLOPs. Attention scatters back to the padded layout for `scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch


class Packing:
    """Which slots of a batch are real, and how to move token tensors between layouts.

    Shape:
        mask: (B, T) bool, True = real. `packed=False` keeps all B*T slots (static shapes,
        as torch.compile and CUDA graphs like them); the results are the same.
    """

    def __init__(self, mask: torch.Tensor, packed: bool):
        self.shape = mask.shape
        self.keep = mask[:, None, None, :]  # (B, 1, 1, T): keys that may be attended to
        self.idx = mask.flatten().nonzero().squeeze(1) if packed else None  # (N_real,)

    def unpad(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C) with N the real tokens (or all B*T)."""
        flat = h.reshape(-1, h.shape[-1])
        return flat if self.idx is None else flat.index_select(0, self.idx)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (B, T, C), zeros at padded slots."""
        if self.idx is not None:
            x = x.new_zeros(self.shape.numel(), x.shape[-1]).index_copy(0, self.idx, x)
        return x.view(*self.shape, x.shape[-1])
