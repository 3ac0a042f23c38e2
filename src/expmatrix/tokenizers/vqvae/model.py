"""The per-object VQ-VAE: encoder -> vector quantizer (vector-quantize-pytorch) -> decoder.

An object is its normalized features and its one-hot type. The encoder is an MLP per object, or a
small NormFormer over the event's objects (the model's own block, so a code can depend on the
object's neighbours); only real objects are quantized, so padding never reaches the codebook, its
EMA updates or its k-means initialisation. The decoder reconstructs features and type from the code.

Shape:
    x: (B, O, F) float, types: (B, O) int64 (1..N_OBJECT_TYPES), real: (B, O) bool
    -> codes (M,) of the M real objects, their latents (M, D) and reconstructions (M, F + T)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from expmatrix.config.layout import N_OBJECT_TYPES
from expmatrix.layers.blocks import make_block
from expmatrix.layers.packing import Packing

HEADS = 4  # of the normformer encoder


def mlp(n_in: int, hidden: int, n_out: int, layers: int) -> nn.Sequential:
    sizes = [n_in] + [hidden] * layers
    parts: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:], strict=False):
        parts += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*parts, nn.Linear(sizes[-1], n_out))


class SetEncoder(nn.Module):
    """Objects -> latents through NormFormer blocks over each event's real objects (no positions: a set)."""

    def __init__(self, n_in: int, hidden: int, n_out: int, layers: int):
        super().__init__()
        self.proj_in = nn.Linear(n_in, hidden)
        self.blocks = nn.ModuleList(make_block("normformer", hidden, HEADS, 2 * hidden, 0.0) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.proj_out = nn.Linear(hidden, n_out)

    def forward(self, inputs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        keep = real.any(1)  # events without a real object have nothing to attend to
        packing = Packing(real[keep], packed=True)
        h = packing.unpad(self.proj_in(inputs[keep]))  # (M, C), event-major like inputs[real]
        for block in self.blocks:
            h = block(h, packing)
        return self.proj_out(self.norm(h))


class ObjectVQVAE(nn.Module):
    def __init__(self, n_features: int, cfg: Any):
        super().__init__()
        n_in = n_features + N_OBJECT_TYPES
        self.set_encoder = cfg.encoder == "normformer"
        if self.set_encoder:
            self.encoder: nn.Module = SetEncoder(n_in, cfg.hidden, cfg.code_dim, cfg.layers)
        else:
            self.encoder = mlp(n_in, cfg.hidden, cfg.code_dim, cfg.layers)
        self.vq = VectorQuantize(
            dim=cfg.code_dim,
            codebook_size=cfg.codebook_size,
            decay=cfg.decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            use_cosine_sim=cfg.cosine,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            commitment_weight=cfg.commitment_weight,
            rotation_trick=cfg.rotation_trick,
        )
        self.decoder = mlp(cfg.code_dim, cfg.hidden, n_in, cfg.layers)
        self.n_features = n_features
        self.cosine = cfg.cosine

    def encode(self, x: torch.Tensor, types: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(M, D) latents of the real objects, event-major (the order of x[real])."""
        inputs = torch.cat([x, F.one_hot(types.clamp(min=1) - 1, N_OBJECT_TYPES).to(x.dtype)], dim=-1)
        if self.set_encoder:
            return self.encoder(inputs, real)
        return self.encoder(inputs[real])

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training path: (quantized (M, D), codes (M,), VQ loss) with the codebook's EMA and dead-code updates."""
        q, codes, loss = self.vq(z.unsqueeze(0))
        return q[0], codes[0].long(), loss.sum()

    @torch.no_grad()
    def lookup(self, z: torch.Tensor, rows: int = 1 << 14) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen path (health, tokens): (code vectors (M, D), codes (M,)) of the nearest codes, in blocks of
        `rows` (bounded memory; several times faster than the quantizer's forward, the same choice)."""
        book = self.vq.codebook.reshape(self.vq.codebook_size, -1)  # (K, D)
        if self.cosine:
            z, book = F.normalize(z, dim=-1), F.normalize(book, dim=-1)
        book2 = (book**2).sum(-1)
        codes = torch.cat([(book2 - 2 * block @ book.T).argmin(-1) for block in z.split(rows)])  # |z|^2: the same
        return book[codes], codes

    def forward(self, x, types, real) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, codes, reconstruction (M, F + T), VQ loss) of the real objects."""
        z = self.encode(x, types, real)
        q, codes, loss = self.quantize(z)
        return z, codes, self.decoder(q), loss

    def reconstruction_loss(self, out: torch.Tensor, x: torch.Tensor, types: torch.Tensor, type_weight: float):
        """Mean squared error of the normalized features plus `type_weight` x cross-entropy of the type."""
        features = F.mse_loss(out[:, : self.n_features], x)
        return features + type_weight * F.cross_entropy(out[:, self.n_features :], types - 1)
