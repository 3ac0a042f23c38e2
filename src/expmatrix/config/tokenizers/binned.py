"""The binned tokenizers' presets: the joint (Ambre) token and the factorized codes share their bins."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from expmatrix.config.strict import Strict, tagged
from expmatrix.config.tokenizers.common import PI, TOKEN_FEATURES, TokenizerFields


class QuantileBins(Strict):
    kind: Literal["quantile"]  # equal-frequency edges from the training split's real entries
    bins: int | None = Field(None, ge=2)  # None: the tokenizer's n_bins


class FixedBins(Strict):
    kind: Literal["fixed"]  # equal widths over `range`; values outside go to the edge bins (counted)
    range: tuple[float, float]
    bins: int | None = Field(None, ge=2)
    width: float | None = None  # optional, but if given it must equal (high - low) / bins


class CyclicBins(Strict):
    kind: Literal["cyclic"]  # an angle: equal widths over `range`, values wrap around
    range: tuple[float, float] = (-PI, PI)
    bins: int | None = Field(None, ge=2)
    width: float | None = None  # NOTE: 5 bins over [-pi, pi) are 2*pi/5 wide, not the thesis plan's pi/5


BinRule = Annotated[QuantileBins | FixedBins | CyclicBins, Field(discriminator="kind"), BeforeValidator(tagged)]


def _ambre_rules() -> dict[str, Any]:
    q, c = QuantileBins(kind="quantile"), CyclicBins(kind="cyclic")
    return {"E": q, "pT": q, "eta": q, "phi": c, "MET": q, "MET_phi": c.model_copy()}


class BinningFields(TokenizerFields):
    """What the joint and the factorized binned tokenizers share: the bins of every feature."""

    n_bins: int = Field(5, ge=2)  # default bins per feature
    rules: dict[TOKEN_FEATURES, BinRule] = Field(default_factory=_ambre_rules)
    fit_on: Literal["all", "background"] = "all"  # which training events the quantile edges come from
    per_object_type: bool = False  # quantile edges of object features fitted per object type

    @model_validator(mode="after")
    def _widths_cover_the_range(self) -> BinningFields:
        for f, rule in self.rules.items():
            if isinstance(rule, QuantileBins):
                continue
            (lo, hi), n = rule.range, rule.bins or self.n_bins
            if not lo < hi:
                raise ValueError(f"rules.{f}.range must be [low, high] with low < high, got {list(rule.range)}")
            if rule.width is not None and abs(rule.width * n - (hi - lo)) > 1e-9 * (hi - lo):
                raise ValueError(
                    f"rules.{f}: {n} bins of width {rule.width:.6g} cover {rule.width * n:.6g}, "
                    f"but the range [{lo:.6g}, {hi:.6g}) is {hi - lo:.6g} wide: use width {(hi - lo) / n!r}"
                )
        return self

    def declared_features(self) -> list[str]:
        return list(self.rules)


class BinnedTokenizerConfig(BinningFields):
    """Joint (Ambre) binning: one mixed-radix token per object, MET and MET-phi tokens after."""

    kind: Literal["binned"]


class FactorizedTokenizerConfig(BinningFields):
    """The same bins, one integer per feature, each with its own embedding table."""

    kind: Literal["factorized"]
    combine: Literal["sum", "concat"] = "sum"  # concat: the per-feature embeddings are concatenated, then projected
