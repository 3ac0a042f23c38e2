"""The masked-modelling model: the job's transformer (embedding + backbone, its head unused), a learned mask
vector that replaces the embedding of masked objects, and one linear head per target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from expmatrix.models.transformer import Transformer
from expmatrix.pretraining.targets import Target
from expmatrix.tokenizers import Tokens

HEAD = "head."  # the job's task head: not pretrained, not part of the artifact


def mask_objects(real: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(N, O) bool: each real object masked with probability `fraction`; padded slots never."""
    return real & (torch.rand(real.shape, generator=generator) < fraction).to(real.device)


class MaskedModel(nn.Module):
    """Tokens + which objects are masked -> one output per target at each masked object.

    The mask vector acts at the embedding output, so it works for every tokenizer (continuous, codes, VQ).
    Global tokens (MET) come first in the sequence and are never masked."""

    def __init__(self, model: Transformer, targets: list[Target], d_model: int):
        super().__init__()
        self.model = model
        self.mask_vector = nn.Parameter(torch.randn(d_model) * 0.02)
        self.heads = nn.ModuleList(nn.Linear(d_model, t.outputs) for t in targets)

    def forward(self, tokens: Tokens, masked: torch.Tensor) -> list[torch.Tensor]:
        """masked (B, O) bool -> [(M, outputs of target k)] with M = masked.sum(), in row-major order."""
        h, mask = self.model.embed(tokens)  # (B, T, C), (B, T); T = G global tokens + O objects
        slots = F.pad(masked, (h.shape[1] - masked.shape[1], 0))  # (B, T)
        h = torch.where(slots[..., None], self.mask_vector.to(h.dtype), h)
        h, _ = self.model.encode(h, mask)  # (B, T', C)
        hidden = h[:, h.shape[1] - masked.shape[1] :][masked]  # (M, C): the objects are the last O slots
        return [head(hidden) for head in self.heads]

    def trained_parameters(self) -> list[nn.Parameter]:
        """Everything but the job's task head."""
        return [p for n, p in self.named_parameters() if not n.startswith("model." + HEAD)]

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The artifact: the job model's state without its head (embedding, positions, CLS, blocks, norm)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if not k.startswith(HEAD)}
