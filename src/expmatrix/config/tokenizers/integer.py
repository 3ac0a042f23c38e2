"""The `integer` tokenizer's preset: per-feature integer codes (IceCube time, charge, sensor id)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from expmatrix.config.strict import Strict, tagged
from expmatrix.config.tokenizers.common import TOKEN_FEATURES, TokenizerFields


class RoundCodes(Strict):
    kind: Literal["round"]  # code = clip(round((x - first - offset) * scale), 0, codes - 1)
    offset: float = 0.0
    scale: float = 1.0  # 1 / bin width
    codes: int = Field(ge=1)  # how many codes (the vocabulary before the reserved ids)
    relative_to_first: bool = False  # subtract the event's smallest value (IceCube: time of the first pulse)


class QuantileCodes(Strict):
    kind: Literal["quantile"]  # equal-frequency bins fitted on the training split's real entries
    bins: int = Field(ge=2)


class CategoricalCodes(Strict):
    kind: Literal["categorical"]  # integer values 0..categories-1, e.g. IceCube sensor_id (5160)
    categories: int = Field(ge=1)


IntegerRule = Annotated[
    RoundCodes | QuantileCodes | CategoricalCodes, Field(discriminator="kind"), BeforeValidator(tagged)
]


class IntegerTokenizerConfig(TokenizerFields):
    """Per-feature integer codes (0 = padding, 1 = mask), each with its own nn.Embedding."""

    kind: Literal["integer"]
    rules: dict[TOKEN_FEATURES, IntegerRule]
    object_type: bool = True  # the object-type id as one more categorical code
    combine: Literal["sum", "concat"] = "concat"  # concat: concatenated, then projected to the model width

    def declared_features(self) -> list[str]:
        return list(self.rules)
