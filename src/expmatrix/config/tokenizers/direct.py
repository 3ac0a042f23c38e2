"""The `direct` (continuous) tokenizer's preset: a transform per feature, then a value embedding."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from expmatrix.config.strict import Strict, tagged
from expmatrix.config.tokenizers.common import TOKEN_FEATURES, TokenizerFields


class FeatureTransform(Strict):
    """One continuous feature: v -> clip(fitted((op(v) - shift) * scale)), e.g. IceCube charge log10(q)/3."""

    op: Literal["identity", "log", "log10", "log1p"] = "identity"
    shift: float = 0.0
    scale: float = 1.0
    fit: Literal["none", "standardize", "robust"] = "none"  # robust: median and 1/max(p84-p50, p50-p16)
    clip: tuple[float, float] | None = None  # applied last, to the fitted value

    @model_validator(mode="after")
    def _check(self) -> FeatureTransform:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"clip must be [low, high] with low < high, got {list(self.clip)}")
        return self


class RaiseOnInvalid(Strict):
    kind: Literal["error"]  # NaN/inf, or a value outside the op's domain, is an error naming the feature


class SentinelForInvalid(Strict):
    kind: Literal["sentinel"]  # invalid values become `value`, and a validity channel (+1/-1) is added
    value: float = 0.0


class LinearValueEmbedding(Strict):
    kind: Literal["linear"]


class MLPValueEmbedding(Strict):
    kind: Literal["mlp"]  # Linear -> LayerNorm -> GELU -> Linear


class PeriodicValueEmbedding(Strict):
    kind: Literal["periodic"]  # cos/sin(2 pi c x) with learned frequencies c ~ N(0, sigma), then Linear
    frequencies: int = Field(8, ge=1)
    sigma: float = Field(1.0, gt=0)


InvalidPolicy = Annotated[RaiseOnInvalid | SentinelForInvalid, Field(discriminator="kind"), BeforeValidator(tagged)]
ValueEmbedding = Annotated[
    LinearValueEmbedding | MLPValueEmbedding | PeriodicValueEmbedding,
    Field(discriminator="kind"),
    BeforeValidator(tagged),
]


def _standardized(op: str) -> FeatureTransform:
    return FeatureTransform(op=op, fit="standardize")


class DirectTokenizerConfig(TokenizerFields):
    """Continuous embedding: per-feature transform, fitted on the training split, then a value embedding."""

    kind: Literal["direct"]
    transforms: dict[TOKEN_FEATURES, FeatureTransform] = Field(
        default_factory=lambda: {
            "E": _standardized("log"),
            "pT": _standardized("log"),
            "eta": _standardized("identity"),
            "phi": _standardized("identity"),
            "MET": _standardized("log"),
            "MET_phi": _standardized("identity"),
        }
    )
    invalid: InvalidPolicy = Field(default_factory=lambda: RaiseOnInvalid(kind="error"))
    embedding: ValueEmbedding = Field(default_factory=lambda: LinearValueEmbedding(kind="linear"))
    object_type: bool = True  # add a learned embedding of the object-type id (False for IceCube pulses)

    def declared_features(self) -> list[str]:
        return list(self.transforms)
