"""One transformer encoder for every tokenizer: embedding -> position -> blocks -> pooling -> head.

The head is one linear layer with `n_outputs` units; the training loss gives them their
meaning (class logits, a regression vector, or a direction whose norm is the vMF
concentration): see `expmatrix.training.losses`.
"""

from __future__ import annotations

import torch
from torch import nn

from expmatrix.config import ModelConfig
from expmatrix.layers.blocks import make_block
from expmatrix.layers.packing import Packing
from expmatrix.layers.position import additive_position
from expmatrix.tokenizers import Tokens


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


def rotary(cfg: ModelConfig, head_dim: int) -> nn.Module | None:
    """The shared rotary embedding of `position: rope` (rotary-embedding-torch), else None."""
    if cfg.position != "rope":
        return None
    from rotary_embedding_torch import RotaryEmbedding

    if head_dim % 2 or head_dim < 4:
        raise ValueError(f"rope needs an even head width of at least 4, got {head_dim=}")
    return RotaryEmbedding(dim=head_dim, theta=cfg.rope_theta)


class Transformer(nn.Module):
    """Tokens -> (B, n_outputs). The one forward path of training, evaluation and reports.

    `seq_len` is the number of tokens the tokenizer emits per event (the learned
    position table has that many rows). The CLS token, when pooling is `cls`, is put
    first; it takes no additive position, and rotary position 0 (the other tokens shift by one).
    """

    def __init__(
        self,
        embedding: nn.Module,
        cfg: ModelConfig,
        d_model: int,
        d_ff: int,
        n_outputs: int,
        seq_len: int,
        layers: int | None = None,
    ):
        """`layers`: blocks (default `cfg.layers`)."""
        super().__init__()
        self.pooling = cfg.pooling
        self.embed = embedding
        self.position = additive_position(cfg.position, d_model, seq_len)
        self.rope = rotary(cfg, d_model // cfg.heads)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02) if self.pooling == "cls" else None
        self.blocks = nn.ModuleList(
            make_block(cfg.block, d_model, cfg.heads, d_ff, cfg.dropout) for _ in range(layers or cfg.layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_outputs)
        self.packed: bool | None = None  # None: pack real tokens on CPU, keep all slots on GPUs and under compile

    def forward(self, tokens: Tokens) -> torch.Tensor:
        h, mask = self.encode(*self.embed(tokens))
        return self.head(pool(h, mask, self.pooling))

    def encode(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded tokens (B, T, C), mask (B, T) -> final hidden states (B, T', C) (zeros at padded slots) and
        their mask (B, T'); T' = T + 1 with the CLS token first. The backbone that pretraining trains."""
        h = self.position(h)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)  # shape[0]: symbolic in torch.export
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        packed = self.packed if self.packed is not None else not h.is_cuda and not torch.compiler.is_compiling()
        packing = Packing(mask, packed)
        x = packing.unpad(h)  # (N, C)
        rot = None
        if self.rope is not None:  # angles of every token's slot, shared by all blocks
            angles = self.rope(packing.positions.to(h.dtype))[:, None, :]  # (N, 1, D)
            rot = angles.cos().to(h.dtype), angles.sin().to(h.dtype)
        for block in self.blocks:
            x = block(x, packing, rot)
        return packing.pad(self.norm(x)), mask


def trainable_params(model: nn.Module) -> int:
    """The parameter count a budget is about (rope's fixed frequencies excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
