"""Input layers the tokenizers own: value encoders for continuous features, tables for integer codes.

Every module maps a batch of `Tokens` to ``((B, T, d_model), (B, T) mask)``; global tokens
(MET, MET-phi) come first, then the object slots.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from expmatrix.tokenizers.base import Tokens


class Periodic(nn.Module):
    """x (..., F) -> (..., F * 2k): cos and sin of 2 pi c x, learned frequencies c ~ N(0, sigma) per feature."""

    def __init__(self, n_features: int, frequencies: int, sigma: float):
        super().__init__()
        self.freq = nn.Parameter(torch.randn(n_features, frequencies) * sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * self.freq * x.unsqueeze(-1)  # (..., F, k)
        return torch.cat([torch.cos(z), torch.sin(z)], dim=-1).flatten(-2)


class ValueEncoder(nn.Module):
    """(..., n_values + n_flags) -> (..., d_model): linear, MLP (LayerNorm, GELU) or periodic features.

    The last `n_flags` channels are validity flags (+1 valid, -1 replaced by the sentinel): they go
    straight to the linear layer, never through the periodic features.
    """

    def __init__(self, n_values: int, n_flags: int, d_model: int, cfg):
        super().__init__()
        self.n_values = n_values
        self.periodic = Periodic(n_values, cfg.frequencies, cfg.sigma) if cfg.kind == "periodic" else None
        width = n_values * 2 * cfg.frequencies if self.periodic is not None else n_values
        self.proj = nn.Linear(width + n_flags, d_model)
        self.mlp = (
            nn.Sequential(nn.LayerNorm(d_model), nn.GELU(), nn.Linear(d_model, d_model)) if cfg.kind == "mlp" else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.periodic is not None:
            x = torch.cat([self.periodic(x[..., : self.n_values]), x[..., self.n_values :]], dim=-1)
        h = self.proj(x)
        return self.mlp(h) if self.mlp is not None else h


class TableEmbedding(nn.Module):
    """Integer codes -> (B, G + O, d_model): one nn.Embedding per object part and per global.

    Object parts (object type, then one per feature) are summed, or concatenated and projected.

    Shape:
        tokens["codes"]: (B, O, P) int64, 0 = padding in every part
        tokens["g"]:     (B, G) int64 (absent without globals)
    """

    def __init__(self, part_vocabs: list[int], global_vocabs: list[int], d_model: int, combine: str):
        super().__init__()
        self.parts = nn.ModuleList(nn.Embedding(v, d_model) for v in part_vocabs)
        self.globals = nn.ModuleList(nn.Embedding(v, d_model) for v in global_vocabs)
        self.project = nn.Linear(len(part_vocabs) * d_model, d_model) if combine == "concat" else None

    def forward(self, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor]:
        codes = tokens["codes"]
        parts = [table(codes[..., i]) for i, table in enumerate(self.parts)]  # P x (B, O, C)
        h = self.project(torch.cat(parts, dim=-1)) if self.project is not None else torch.stack(parts).sum(0)
        if len(self.globals):
            g = torch.stack([table(tokens["g"][:, i]) for i, table in enumerate(self.globals)], dim=1)  # (B, G, C)
            h = torch.cat([g, h], dim=1)
        return h, tokens["mask"]
