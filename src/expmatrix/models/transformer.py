"""One transformer encoder for every tokenizer: position -> normformer blocks -> pooling -> head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from expmatrix.tokenizers import Tokens


class SinusoidalPosition(nn.Module):
    """Adds the fixed sin/cos encoding of the slot index (objects are pT-ordered)."""

    def __init__(self, d_model: int, max_len: int = 256):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: d_model // 2])
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        return h + self.pe[: h.shape[1]]


class NormformerBlock(nn.Module):
    """Pre-LN block with NormFormer's three additions (Shleifer et al. 2021).

    LayerNorm on the attention output before the residual, a learned scale per head,
    and a LayerNorm after the FFN activation.
    NOTE: the head scale multiplies each head's attention output before the output
    projection, as in the paper (not after it).
    """

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln_in = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.head_scale = nn.Parameter(torch.ones(heads))
        self.proj = nn.Linear(d_model, d_model)
        self.ln_attn = nn.LayerNorm(d_model)
        self.ln_ff_in = nn.LayerNorm(d_model)
        self.ff_up = nn.Linear(d_model, d_ff)
        self.ln_ff_mid = nn.LayerNorm(d_ff)
        self.ff_down = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, T, C); keep (B, 1, 1, T) bool, True for keys that may be attended to."""
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_in(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)
        a = a * self.head_scale.view(1, -1, 1, 1)  # (B, H, T, C/H)
        x = x + self.drop(self.ln_attn(self.proj(a.transpose(1, 2).reshape(B, T, C))))
        h = self.ln_ff_mid(F.gelu(self.ff_up(self.ln_ff_in(x))))
        return x + self.drop(self.ff_down(h))


def pool(h: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, C), (B, T) -> (B, C). `cls` takes slot 0; mean and max use only real slots."""
    if how == "cls":
        return h[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "max":
        return h.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
    raise ValueError(f"unknown pooling {how!r}; expected cls, mean or max")


class TransformerClassifier(nn.Module):
    """Tokens -> logits (B, n_classes). The one forward path of training, evaluation and reports."""

    def __init__(
        self,
        embedding: nn.Module,
        d_model: int,
        d_ff: int,
        layers: int,
        heads: int,
        pooling: str,
        position: str,
        n_classes: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"width {d_model} is not divisible by {heads} heads")
        self.pooling = pooling
        self.embed = embedding
        self.position = SinusoidalPosition(d_model) if position == "sinusoidal" else nn.Identity()
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02) if pooling == "cls" else None
        self.blocks = nn.ModuleList(NormformerBlock(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, tokens: Tokens) -> torch.Tensor:
        h, mask = self.embed(tokens)  # (B, T, C), (B, T)
        h = self.position(h)
        if self.cls is not None:  # the CLS token carries no position
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        keep = mask[:, None, None, :]
        for block in self.blocks:
            h = block(h, keep)
        return self.head(pool(self.norm(h), mask, self.pooling))
