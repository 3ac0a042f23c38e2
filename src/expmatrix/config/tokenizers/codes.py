"""Presets of the code tokenizers: each real object becomes one code from a codebook.

The object features are normalized as the `direct` preset does; MET and MET-phi become their own
bin tokens as in the joint binning (MET: quantile bins of the training split, MET-phi: equal widths
over [-pi, pi)). `kmeans` and `fsq` are the baselines that cannot collapse: they show whether a
VQ-VAE deficit comes from training the codebook or from discretisation itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from expmatrix.config.tokenizers.common import TOKEN_FEATURES, TokenizerFields
from expmatrix.config.tokenizers.direct import FeatureTransform


def _normalized() -> dict[str, FeatureTransform]:
    """As the `direct` preset: log of the energies, then standardized on the training split's real objects."""
    return {f: FeatureTransform(op="log" if f in ("E", "pT") else "identity", fit="standardize") for f in OBJECT}


OBJECT = ("E", "pT", "eta", "phi")


class CodeFields(TokenizerFields):
    """What every code tokenizer shares: the normalization of the objects, their type, the MET tokens."""

    transforms: dict[TOKEN_FEATURES, FeatureTransform] = Field(default_factory=_normalized)
    object_type: bool = True  # add a learned object-type embedding to the code's
    met_bins: int = Field(5, ge=2)  # MET: quantile bins, MET-phi: equal widths over [-pi, pi); one token each
    seed: int = 0  # of the fit (k-means starts, the VQ-VAE's weights and batches): the same seed, the same codes

    def declared_features(self) -> list[str]:
        return [*self.transforms, "MET", "MET_phi"]


class KMeansTokenizerConfig(CodeFields):
    """Codes from k-means on the normalized object features of the training split."""

    kind: Literal["kmeans"]
    codes: int = Field(512, ge=2)  # k
    iterations: int = Field(100, ge=1)  # Lloyd iterations at most
    max_fit_objects: int = Field(200_000, ge=100)  # a seeded sample of real training objects k-means is fitted on


class FSQTokenizerConfig(CodeFields):
    """Finite scalar quantisation (Mentzer et al. 2023) of the normalized features, whitened by a PCA fitted
    on the training split to len(levels) dimensions; the code count is the product of the levels."""

    kind: Literal["fsq"]
    levels: list[int] = [8, 8, 8]  # 512 codes; at most one level per selected feature

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 3:  # FSQ bounds 2 levels only in its symmetric variant
            raise ValueError("expected a non-empty list of integers >= 3")
        return v
