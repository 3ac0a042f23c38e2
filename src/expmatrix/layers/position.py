"""Position encodings added to the token embeddings: sinusoidal, learned, or none.

Rotary embeddings (`rope`) act inside attention instead: see `blocks.SelfAttention`.
Objects are pT-ordered slots, so a position is a rank; `none` treats them as a set.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """(N,) integer positions -> (N, d_model) sin/cos encoding (sin on even channels, cos on odd ones)."""
    pos = positions.unsqueeze(1)
    freq = torch.exp(torch.arange(0, d_model, 2, device=positions.device) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(len(positions), d_model, device=positions.device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
    return pe


class SinusoidalPosition(nn.Module):
    """Adds the fixed sin/cos encoding of the slot index."""

    def __init__(self, d_model: int, max_len: int = 256):
        super().__init__()
        self.register_buffer("pe", sinusoidal(torch.arange(max_len), d_model), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        return h + self.pe[: h.shape[1]]


class LearnedPosition(nn.Module):
    """Adds a trained vector per slot; the table has exactly as many rows as the job's sequence,
    so every row trains. A shorter sequence uses the first rows (padding appended at the end is harmless)."""

    def __init__(self, d_model: int, seq_len: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        if h.shape[1] > len(self.table):
            raise ValueError(f"learned positions hold {len(self.table)} slots, got a sequence of {h.shape[1]=}")
        return h + self.table[: h.shape[1]]


def additive_position(kind: str, d_model: int, seq_len: int) -> nn.Module:
    """The module added to the embeddings for position `kind` (identity for rope and none)."""
    if kind == "sinusoidal":
        return SinusoidalPosition(d_model, max(256, seq_len))
    if kind == "learned":
        return LearnedPosition(d_model, seq_len)
    return nn.Identity()
