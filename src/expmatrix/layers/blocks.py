"""Transformer blocks: plain pre-LN (`prenorm`) and NormFormer (`normformer`).

Blocks act on tokens in the packed layout `(N, C)` (see `packing.py`); only attention
needs rectangles `(B, L)` and goes through `scaled_dot_product_attention` with a
boolean key padding mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from expmatrix.layers.packing import Packing


def rotate(t: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding of (N, H, D) tokens by their (cos, sin) angles (N, 1, D); pairs are interleaved as in
    rotary-embedding-torch."""
    cos, sin = rot
    pairs = t.unflatten(-1, (-1, 2))
    half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return t * cos + half * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection, per length bucket of `packing`.

    `head_scale` (NormFormer) multiplies each head's output before the output projection.
    `rot`, when given, rotates queries and keys by their slot index (rope).
    """

    def __init__(self, d_model: int, heads: int, dropout: float, head_scale: bool):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"width {d_model} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.head_scale = nn.Parameter(torch.ones(heads)) if head_scale else None
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, packing: Packing, rot: tuple[torch.Tensor, torch.Tensor] | None):
        N, C = x.shape
        H, D = self.heads, C // self.heads
        qkv = self.qkv(x)  # (N, 3C)
        if rot is not None:
            q, k, v = qkv.view(N, 3, H, D).unbind(1)
            qkv = torch.cat([rotate(q, rot), rotate(k, rot), v], dim=1).view(N, 3 * C)
        drop = self.dropout if self.training else 0.0
        out = []
        for part, (B, L, keep) in zip(packing.to_buckets(qkv), packing.buckets, strict=True):
            q, k, v = part.view(B, L, 3, H, D).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=drop)  # (B, H, L, D)
            if self.head_scale is not None:
                a = a * self.head_scale.view(1, -1, 1, 1)
            out.append(a.transpose(1, 2).reshape(B, L, C))
        return self.proj(packing.from_buckets(out))


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

    def forward(self, x: torch.Tensor, packing: Packing, rot: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x (N, C) tokens in `packing`'s layout -> (N, C); `rot`: rope's (cos, sin) per token."""
        x = x + self.drop(self.ln_attn(self.attn(self.ln_in(x), packing, rot)))
        return x + self.drop(self.ff_down(self.ln_ff_mid(F.gelu(self.ff_up(self.ln_ff_in(x))))))


BLOCKS = {"normformer": True, "prenorm": False}  # block name -> NormFormer additions on


def make_block(kind: str, d_model: int, heads: int, d_ff: int, dropout: float) -> Block:
    if kind not in BLOCKS:
        raise ValueError(f"unknown block {kind!r}; expected one of {sorted(BLOCKS)}")
    return Block(d_model, heads, d_ff, dropout, normformer=BLOCKS[kind])
