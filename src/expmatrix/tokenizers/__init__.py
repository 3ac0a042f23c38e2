"""Tokenizer registry: config kind -> implementation."""

from __future__ import annotations

import expmatrix.data  # noqa: F401 - spec imports data.layout: load the data package first (no import cycle)
from expmatrix.spec import (
    BinnedTokenizerConfig,
    DirectTokenizerConfig,
    FactorizedTokenizerConfig,
    IntegerTokenizerConfig,
)
from expmatrix.tokenizers.base import Tokenizer, TokenizerError, Tokens
from expmatrix.tokenizers.binned import BinnedTokenizer
from expmatrix.tokenizers.direct import DirectTokenizer
from expmatrix.tokenizers.factorized import FactorizedTokenizer
from expmatrix.tokenizers.integer import IntegerTokenizer

REGISTRY: dict[type, type[Tokenizer]] = {
    DirectTokenizerConfig: DirectTokenizer,
    BinnedTokenizerConfig: BinnedTokenizer,
    FactorizedTokenizerConfig: FactorizedTokenizer,
    IntegerTokenizerConfig: IntegerTokenizer,
}


def build_tokenizer(config, features: tuple[str, ...], use_met: bool) -> Tokenizer:
    """The unfitted tokenizer a job's `tokenizer` section describes."""
    return REGISTRY[type(config)](config, features, use_met)


__all__ = ["Tokenizer", "TokenizerError", "Tokens", "build_tokenizer"]
