"""The `vqvae` preset: codes from a per-object autoencoder with a vector quantizer, pretrained on the
training split's real objects (vector-quantize-pytorch), then frozen; the code embedding is trained."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from expmatrix.config.tokenizers.codes import CodeFields


class VQVAETokenizerConfig(CodeFields):
    """Defaults follow the recipes that trained healthy codebooks (OmniJet-alpha, MPM): 512 codes, a low
    code dimension, k-means initialisation and dead-code replacement."""

    kind: Literal["vqvae"]
    codebook_size: int = Field(512, ge=2)
    code_dim: int = Field(4, ge=1)  # the latent the codebook lives in (the quantizer's dim)
    encoder: Literal["mlp", "normformer"] = "mlp"  # normformer: a code may depend on the event's other objects
    hidden: int = Field(128, ge=4)  # width of the encoder and decoder
    layers: int = Field(2, ge=1)  # hidden layers (mlp) or blocks (normformer) of the encoder; the decoder mirrors
    cosine: bool = False  # cosine-similarity codebook (unit-norm codes)
    kmeans_init: bool = True  # codebook initialised by k-means on the first batch's real objects
    kmeans_iters: int = Field(10, ge=1)
    dead_code_threshold: float = Field(2.0, ge=0)  # a code used fewer times than this in a batch is replaced
    commitment_weight: float = Field(1.0, ge=0)
    rotation_trick: bool = True  # gradients through the quantizer by the rotation trick (Fifty et al. 2024)
    decay: float = Field(0.8, gt=0, lt=1)  # EMA decay of the codebook
    type_weight: float = Field(0.1, ge=0)  # weight of the object-type reconstruction (cross-entropy)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=8)  # events per step (about 9 real objects each)
    lr: float = Field(1e-3, gt=0)
    holdout: float = Field(0.1, gt=0, lt=0.5)  # share of training events held out to measure codebook health
    min_utilisation: float = Field(0.5, ge=0, le=1)  # held-out codes used / codebook size, else the fit fails
    embedding_init: Literal["fresh", "codebook"] = "fresh"  # codebook: the code table starts at the code vectors

    @model_validator(mode="after")
    def _check(self) -> VQVAETokenizerConfig:
        if self.encoder == "normformer" and self.hidden % 4:
            raise ValueError(f"hidden must be a multiple of 4 heads for the normformer encoder, got {self.hidden}")
        return self
