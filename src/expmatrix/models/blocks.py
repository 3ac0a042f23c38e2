"""Transformer blocks: plain pre-LN (`prenorm`) and NormFormer (`normformer`).

Blocks act on tokens in the packed layout `(N, C)` (see `packing.py`); only attention
needs the `(B, T)` structure and goes through `scaled_dot_product_attention` with a
boolean key padding mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from expmatrix.models.packing import Packing


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    `head_scale` (NormFormer) multiplies each head's output before the output projection.
    `rope`, when given, rotates queries and keys by their slot index.
    """

    def __init__(self, d_model: int, heads: int, dropout: float, head_scale: bool):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"width {d_model} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.head_scale = nn.Parameter(torch.ones(heads)) if head_scale else None
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, packing: Packing, rope: nn.Module | None) -> torch.Tensor:
        qkv = packing.pad(self.qkv(x))  # (B, T, 3C)
        B, T, C3 = qkv.shape
        q, k, v = qkv.view(B, T, 3, self.heads, C3 // (3 * self.heads)).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        if rope is not None:
            q, k = rope.rotate_queries_or_keys(q), rope.rotate_queries_or_keys(k)
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=packing.keep, dropout_p=drop)  # (B, H, T, D)
        if self.head_scale is not None:
            a = a * self.head_scale.view(1, -1, 1, 1)
        return self.proj(packing.unpad(a.transpose(1, 2).reshape(B, T, C3 // 3)))


class Block(nn.Module):
    """Pre-LN block; `normformer=True` adds NormFormer's three pieces (Shleifer et al. 2021):
    a LayerNorm on the attention output before the residual, a learned scale per head,
    and a LayerNorm after the FFN activation.

    NOTE: the head scale multiplies each head's attention output before the output
    projection, as in the paper (not after it).
    """

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, normformer: bool):
        super().__init__()
        self.ln_in = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout, head_scale=normformer)
        self.ln_attn = nn.LayerNorm(d_model) if normformer else nn.Identity()
        self.ln_ff_in = nn.LayerNorm(d_model)
        self.ff_up = nn.Linear(d_model, d_ff)
        self.ln_ff_mid = nn.LayerNorm(d_ff) if normformer else nn.Identity()
        self.ff_down = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, packing: Packing, rope: nn.Module | None = None) -> torch.Tensor:
        """x (N, C) tokens in `packing`'s layout -> (N, C)."""
        x = x + self.drop(self.ln_attn(self.attn(self.ln_in(x), packing, rope)))
        return x + self.drop(self.ff_down(self.ln_ff_mid(F.gelu(self.ff_up(self.ln_ff_in(x))))))


BLOCKS = {"normformer": True, "prenorm": False}  # block name -> NormFormer additions on


def make_block(kind: str, d_model: int, heads: int, d_ff: int, dropout: float) -> Block:
    if kind not in BLOCKS:
        raise ValueError(f"unknown block {kind!r}; expected one of {sorted(BLOCKS)}")
    return Block(d_model, heads, d_ff, dropout, normformer=BLOCKS[kind])
